/**
 * Durability: the worker process is SIGKILLed in the middle of a GRPO iteration; a new worker takes
 * over and the same run finishes, with no duplicated metric or sample rows, and — because randomness is
 * counter-based and every stage restarts from recorded inputs — with the same rollouts and rewards as
 * an uninterrupted run of the same config.
 */
import type pg from 'pg';
import {
  lastLine,
  pool,
  runCli,
  smokeYaml,
  startWorker,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
  type WorkerProcess,
  removeTmpDirs,
  terminateOpenRuns,
  runIdOf,
} from './helpers';
import type { RunSummary } from '../../db/queries';

jest.setTimeout(300_000);

// A short heartbeat timeout, so the killed worker's activity is handed to the new worker in seconds
// (with margin: on a loaded 2-core machine a live worker must not look dead).
const env = testEnv(`chaos-${process.pid}-`, { OPERAFLOW_HEARTBEAT_TIMEOUT: '8' });
let db: pg.Pool;
const workers: WorkerProcess[] = [];

beforeAll(() => {
  db = pool();
});

const started: string[] = [];

afterAll(async () => {
  await terminateOpenRuns(started);
  for (const w of workers) await w.stop();
  await db?.end();
  removeTmpDirs();
});

const config = (name: string) =>
  writeConfig(
    smokeYaml({
      name,
      artifactsDir: '',
      grpo: '{ iterations: 3, promptsPerIteration: 8, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 64 }',
      runtime: `{ rolloutShards: 2, continueAsNewEvery: 2, maxStageAttempts: 3, artifactsDir: ${JSON.stringify(tmpDir())} }`,
    }),
  );

async function trainSamples(runId: string) {
  const { rows } = await db.query<{
    iteration: number;
    prompt_id: string;
    sample_index: number;
    response: string;
    reward: number;
    advantage: number;
  }>(
    `select iteration, prompt_id, sample_index, response, reward, advantage from samples
      where run_id = $1 and split = 'train' order by iteration, prompt_id, sample_index`,
    [runId],
  );
  return rows;
}

async function runStatus(runId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ status: string }>('select status from runs where id = $1', [runId]);
  return rows[0]?.status;
}

test('SIGKILL of the worker during an iteration: a new worker finishes the same run, without duplicate rows', async () => {
  const first = await startWorker(env);
  workers.push(first);

  // Reference: the same config, uninterrupted.
  const reference = await runCli(['train', config('chaos-reference'), '--wait', '--json'], env);
  const referenceRun = runIdOf(reference.stdout);
  started.push(referenceRun);
  expect(reference.code).toBe(0);

  const launched = await runCli(['train', config('chaos'), '--json'], env);
  expect(launched.code).toBe(0);
  const runId = runIdOf(launched.stdout);
  started.push(runId);

  // Kill the worker while a compute stage of iteration 2 runs on it (after one continue-as-new-free iteration).
  const victim = await waitFor(
    'a running stage of iteration 2',
    async () => {
      const { rows } = await db.query<{ id: number; stage: string; shard: number }>(
        `select id, stage, shard from stage_attempts
          where run_id = $1 and iteration = 2 and status = 'running' and stage in ('rollout', 'score', 'update')
          order by id desc limit 1`,
        [runId],
      );
      return rows[0];
    },
    120_000,
    50,
  );
  await first.kill();
  const killedAt = Date.now();

  const second = await startWorker(env);
  workers.push(second);
  await waitFor(
    'the run to complete',
    async () => {
      const s = await runStatus(runId);
      if (s === 'failed' || s === 'blocked' || s === 'cancelled')
        throw new Error(`run ended ${s}:\n${second.output()}`);
      return s === 'completed' ? s : undefined;
    },
    180_000,
  );
  process.stderr.write(
    `chaos: killed during ${victim.stage} shard ${victim.shard}; finished ${((Date.now() - killedAt) / 1000).toFixed(1)} s later\n`,
  );

  // The attempt that died is recorded as failed (abandoned) and a later attempt of that stage completed.
  const { rows: attempts } = await db.query<{
    id: number;
    attempt: number;
    status: string;
    error: string | null;
    worker: string;
  }>(
    `select a.id, a.attempt, a.status, a.error, a.worker from stage_attempts a, stage_attempts v
      where v.id = $1 and a.run_id = v.run_id and a.stage = v.stage and a.iteration = v.iteration and a.shard = v.shard
      order by a.attempt`,
    [victim.id],
  );
  const killed = attempts.find((a) => a.id === victim.id)!;
  process.stderr.write(
    `chaos: attempts of the killed stage: ${attempts.map((a) => `#${a.attempt} ${a.status}`).join(', ')}\n`,
  );
  for (const line of second
    .output()
    .split('\n')
    .filter((l) => l.includes('resumes from')))
    process.stderr.write(`chaos: ${line}\n`);
  if (killed.status !== 'completed') {
    expect(killed.status).toBe('failed');
    expect(killed.error).toMatch(/abandoned/);
    expect(
      attempts.some((a) => a.attempt > killed.attempt && a.status === 'completed' && a.worker !== killed.worker),
    ).toBe(true);
  }

  // No duplicate rows (the unique keys make them impossible; the counts prove nothing was lost either).
  const { rows: dupMetrics } = await db.query(
    'select step, name from metrics where run_id = $1 group by step, name having count(*) > 1',
    [runId],
  );
  expect(dupMetrics).toEqual([]);
  const { rows: perIteration } = await db.query<{ split: string; n: number }>(
    'select split, count(*)::int as n from samples where run_id = $1 group by split order by split',
    [runId],
  );
  expect(perIteration).toEqual([
    { split: 'eval', n: 4 * 4 },
    { split: 'train', n: 3 * 8 * 4 },
  ]);

  // Same choices as the uninterrupted run: identical responses, rewards and advantages.
  const got = await trainSamples(runId);
  const want = await trainSamples(referenceRun);
  expect(got.map((s) => [s.iteration, s.prompt_id, s.sample_index, s.response])).toEqual(
    want.map((s) => [s.iteration, s.prompt_id, s.sample_index, s.response]),
  );
  got.forEach((s, k) => {
    expect(s.reward).toBeCloseTo(want[k]!.reward, 6);
    expect(s.advantage).toBeCloseTo(want[k]!.advantage, 4);
  });
});
