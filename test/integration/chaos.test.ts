/**
 * Durability without an operator (the short version of `npm run chaos`): during one run the worker is
 * SIGKILLed twice (in cold-start SFT and in an iteration) and PostgreSQL is stopped the way a crash
 * stops it (immediate shutdown) and brought back. With `runtime.maxStageAttempts: 1` the run must still
 * complete by itself: a lost worker or database is not a failure of the stage. It must end with exactly
 * what an uninterrupted run of the same config records (samples, metrics, checkpoint sha256s), with the
 * killed attempts recorded as `lost` and no duplicate or missing row.
 */
import type pg from 'pg';
import { startLocalPostgres, stopLocalPostgres } from '../../services/postgres';
import {
  pool,
  runCli,
  runIdOf,
  smokeYaml,
  startWorker,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
  type WorkerProcess,
  removeTmpDirs,
  terminateOpenRuns,
} from './helpers';
import { expectSameRecord, runRecord } from './records';

jest.setTimeout(400_000);

// A short heartbeat timeout, so a killed worker's activity is handed to the new worker in seconds.
const env = testEnv(`chaos-${process.pid}-`, { OPERAFLOW_HEARTBEAT_TIMEOUT: '6' });
const localDatabase =
  (JSON.parse(process.env.OPERAFLOW_TEST_ORIGINAL_ENV ?? '{}') as { DATABASE_URL?: string }).DATABASE_URL === undefined;
let db: pg.Pool;
const workers: WorkerProcess[] = [];
const started: string[] = [];

beforeAll(() => {
  db = pool();
});

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
      artifacts: '',
      grpo: '{ iterations: 3, promptsPerIteration: 8, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 64 }',
      runtime: `{ rolloutShards: 2, continueAsNewEvery: 2, maxStageAttempts: 1, artifacts: ${JSON.stringify(tmpDir())} }`,
    }).replace('steps: 20,', 'steps: 60,'),
  );

/** A probe that tolerates the database being down (it is, for a while, on purpose). */
const tolerant =
  <T>(probe: () => Promise<T | undefined>) =>
  async () => {
    try {
      return await probe();
    } catch {
      return undefined;
    }
  };

async function running(
  runId: string,
  stages: string[],
  iteration?: number,
): Promise<{ id: number; stage: string } | undefined> {
  const { rows } = await db.query<{ id: number; stage: string }>(
    `select id, stage from stage_attempts where run_id = $1 and status = 'running' and stage = any($2) ${iteration === undefined ? '' : 'and iteration = $3'} order by id desc limit 1`,
    iteration === undefined ? [runId, stages] : [runId, stages, iteration],
  );
  return rows[0];
}

async function status(runId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ status: string; error: string | null }>(
    'select status, error from runs where id = $1',
    [runId],
  );
  const row = rows[0];
  if (row?.status === 'blocked' || row?.status === 'failed' || row?.status === 'cancelled') {
    throw new Error(`run ended ${row.status}: ${row.error}\n${workers.map((w) => w.output()).join('\n---\n')}`);
  }
  return row?.status;
}

test('two worker kills and a PostgreSQL crash: the run completes by itself and records what an uninterrupted run records', async () => {
  workers.push(await startWorker(env));
  const reference = await runCli(['train', config('chaos-reference'), '--wait', '--json'], env);
  started.push(runIdOf(reference.stdout));
  expect(reference.code).toBe(0);

  const launched = await runCli(['train', config('chaos'), '--json'], env);
  expect(launched.code).toBe(0);
  const runId = runIdOf(launched.stdout);
  started.push(runId);
  const t0 = Date.now();

  // 1. A kill during cold-start SFT.
  await waitFor('cold-start SFT running', () => running(runId, ['coldStartSft']), 120_000, 50);
  await workers.at(-1)!.kill();
  workers.push(await startWorker(env));

  // 2. A kill during a compute stage of iteration 2.
  await waitFor('a compute stage of iteration 2', () => running(runId, ['rollout', 'score', 'update'], 2), 180_000, 50);
  await workers.at(-1)!.kill();
  workers.push(await startWorker(env));

  // 3. PostgreSQL crashes during iteration 3 and comes back 5 s later.
  if (localDatabase) {
    await waitFor(
      'a compute stage of iteration 3',
      () => running(runId, ['rollout', 'score', 'update'], 3),
      180_000,
      50,
    );
    await stopLocalPostgres(() => {}, 'immediate');
    await new Promise((r) => setTimeout(r, 5000));
    await startLocalPostgres();
  }

  await waitFor(
    'the run to complete',
    tolerant(async () => ((await status(runId)) === 'completed' ? true : undefined)),
    240_000,
    500,
  );
  process.stderr.write(
    `chaos: 2 kills${localDatabase ? ' + a PostgreSQL crash' : ''}, completed ${((Date.now() - t0) / 1000).toFixed(1)} s after launch\n`,
  );

  // The killed attempts are `lost`, nothing `failed`, and nobody had to retry anything.
  const { rows: attempts } = await db.query<{ status: string; n: number }>(
    'select status, count(*)::int as n from stage_attempts where run_id = $1 group by status',
    [runId],
  );
  const byStatus = Object.fromEntries(attempts.map((a) => [a.status, a.n]));
  expect(byStatus.lost).toBeGreaterThanOrEqual(2);
  expect(byStatus.failed ?? 0).toBe(0);
  expect(byStatus.running ?? 0).toBe(0);
  const { rows: retries } = await db.query(
    "select 1 from events where run_id = $1 and type in ('retried', 'blocked')",
    [runId],
  );
  expect(retries).toEqual([]);

  // No duplicate rows, none missing, the same values as the uninterrupted run.
  const { rows: dupMetrics } = await db.query(
    'select step, name from metrics where run_id = $1 group by step, name having count(*) > 1',
    [runId],
  );
  expect(dupMetrics).toEqual([]);
  const verified = await runCli(['verify', runId], env);
  expect(`${verified.code} ${verified.stdout}`).toMatch(/^0 .*ok: nothing missing, every file matches its sha256/s);
  expectSameRecord(
    'two kills and a database crash vs uninterrupted',
    await runRecord(db, runId),
    await runRecord(db, started[0]!),
  );
});

// Catches: a SIGKILLed worker's stage waiting out the heartbeat timeout although a worker on the same
// machine can see the process is gone (activities/reaper.ts).
test('a worker killed on this machine has its stage released by another worker at once, not after the heartbeat timeout', async () => {
  const slowEnv = testEnv(`reaper-${process.pid}-`, { OPERAFLOW_HEARTBEAT_TIMEOUT: '300' });
  const pair = [await startWorker(slowEnv), await startWorker(slowEnv)];
  workers.push(...pair);
  const launched = await runCli(['train', config('reaper'), '--json'], slowEnv);
  expect(launched.code).toBe(0);
  const runId = runIdOf(launched.stdout);
  started.push(runId);
  const { rows } = await waitFor(
    'cold-start SFT running',
    async () => {
      const r = await db.query<{ id: number; worker: string }>(
        "select id, worker from stage_attempts where run_id = $1 and stage = 'coldStartSft' and status = 'running'",
        [runId],
      );
      return r.rows.length ? r : undefined;
    },
    120_000,
    50,
  );
  const victim = pair.find((w) => rows[0]!.worker.endsWith(`:${w.child.pid}`))!;
  const killedAt = Date.now();
  await victim.kill();
  const next = await waitFor(
    'the next attempt to start on the other worker',
    async () => {
      const r = await db.query<{ attempt: number; status: string; error: string | null; worker: string }>(
        "select attempt, status, error, worker from stage_attempts where run_id = $1 and stage = 'coldStartSft' order by attempt",
        [runId],
      );
      return r.rows.length >= 2 ? r.rows : undefined;
    },
    60_000,
    100,
  );
  const handoverS = (Date.now() - killedAt) / 1000;
  process.stderr.write(`reaper: the killed worker's SFT restarted elsewhere after ${handoverS.toFixed(1)} s\n`);
  expect(next[0]).toMatchObject({
    status: 'lost',
    error: expect.stringMatching(/died \(process gone\); released by /),
  });
  expect(next[1]!.worker).not.toBe(next[0]!.worker);
  await terminateOpenRuns([runId]);
});
