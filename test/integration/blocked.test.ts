/**
 * A stage that fails for a reason retrying cannot fix does not kill the run: a dataset file with a bad
 * row makes `prepareDataset` fail non-retryably, the run becomes `blocked` with the error recorded
 * (file, line and field), `train --wait` exits non-zero, and after the file is fixed `operaflow retry`
 * continues the same run to completion.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { syntheticTasks } from '../../opera/synthetic';
import type { RunSummary } from '../../db/queries';
import {
  lastLine,
  runCli,
  smokeYaml,
  startWorker,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
  type WorkerProcess,
  runIdOf,
  integrationFile,
} from './helpers';

jest.setTimeout(240_000);

const file = integrationFile('blocked');
const { env, db, started } = file;
let worker: WorkerProcess;

test('a non-retryable stage failure blocks the run; retry continues it after the fix', async () => {
  const dir = tmpDir();
  const dataset = join(dir, 'rows.jsonl');
  const rows = syntheticTasks({ writing: 10, math: 10, seed: 3 }).map((r) => JSON.stringify(r));
  const bad = [...rows];
  bad[4] = JSON.stringify({ prompt: 'Describe a plaid yak.', taskType: 'writing' }); // line 5: no reference
  writeFileSync(dataset, `${rows.join('\n')}\n`);
  const config = writeConfig(
    smokeYaml({
      name: 'blocked',
      artifacts: join(dir, 'artifacts'),
      data: `{ source: ${JSON.stringify(dataset)}, evalFraction: 0.25, maxPromptTokens: 64 }`,
      grpo: '{ iterations: 1, promptsPerIteration: 4, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 32 }',
    }),
  );

  // `train` checks the dataset and refuses a bad row; here the file breaks after that check (edited while
  // the run waited for a worker), so the worker's dataset stage meets the bad row.
  const launched = await runCli(['train', config, '--json'], env);
  expect(launched.code).toBe(0);
  const runId = runIdOf(launched.stdout);
  started.push(runId);
  writeFileSync(dataset, `${bad.join('\n')}\n`);
  worker = await file.worker();
  const first = await runCli(['train', config, '--id', runId, '--wait', '--json'], env);
  expect(first.code).toBe(2);
  const blocked = JSON.parse(lastLine(first.stdout)) as RunSummary;
  started.push(blocked.id);
  expect(blocked.status).toBe('blocked');
  expect(blocked.error).toContain(`${dataset}:5`);
  expect(blocked.error).toMatch(/reference/);
  expect(first.stderr).toContain(`operaflow retry ${blocked.id}`);
  // One attempt: a non-retryable failure is not retried by Temporal, and its error is on the attempt.
  const prep = blocked.stages.find((s) => s.stage === 'prepareDataset')!;
  expect(prep.attempts).toHaveLength(1);
  expect(prep.attempts[0]).toMatchObject({ status: 'failed', error: expect.stringContaining(`${dataset}:5`) });

  // `retry` before the fix: the stage fails again and the run is blocked again (attempt 2 recorded).
  const early = await runCli(['retry', blocked.id], env);
  expect(early.code).toBe(0);
  await waitFor(
    'attempt 2 to fail',
    async () => {
      const { rows: a } = await db.query(
        "select 1 from stage_attempts where run_id = $1 and stage = 'prepareDataset' and attempt = 2 and status = 'failed'",
        [blocked.id],
      );
      return a.length ? true : undefined;
    },
    60_000,
  );

  writeFileSync(dataset, `${rows.join('\n')}\n`);
  await waitFor(
    'the run to be blocked again',
    async () => {
      const { rows: r } = await db.query<{ status: string }>('select status from runs where id = $1', [blocked.id]);
      return r[0]?.status === 'blocked' ? true : undefined;
    },
    30_000,
  );
  const retried = await runCli(['retry', blocked.id], env);
  expect(retried.code).toBe(0);

  const done = await waitFor(
    'the run to complete',
    async () => {
      const show = await runCli(['show', blocked.id, '--json'], env, 60_000);
      const s = JSON.parse(lastLine(show.stdout)) as RunSummary;
      if (s.status === 'failed' || s.status === 'cancelled') throw new Error(`run ended ${s.status}: ${s.error}`);
      return s.status === 'completed' ? s : undefined;
    },
    150_000,
    2000,
  );
  expect(done.error).toBeNull();
  expect(done.currentIteration).toBe(1);
  const attempts = done.stages.find((s) => s.stage === 'prepareDataset')!.attempts.map((a) => a.status);
  expect(attempts).toEqual(['failed', 'failed', 'completed']);
  const types = done.events.map((e) => e.type);
  expect(types.filter((t) => t === 'blocked')).toHaveLength(2);
  expect(types.filter((t) => t === 'retried')).toHaveLength(2);

  // retry of a run that is not blocked is refused with a reason.
  const again = await runCli(['retry', blocked.id], env);
  expect(again.code).not.toBe(0);
  expect(again.stderr).toMatch(/not blocked|not running/);
});

// Catches: an operator told to `retry` a run whose cause is in its frozen config (the retry fails the same way).
test('a cause in the frozen config names the key and says to cancel and train anew, not to retry', async () => {
  worker ??= await file.worker();
  const config = writeConfig(smokeYaml({ name: 'diverges', artifacts: tmpDir() }).replace('lr: 0.003', 'lr: 1e30'));
  const res = await runCli(['train', config, '--wait', '--json'], env);
  const summary = JSON.parse(lastLine(res.stdout)) as RunSummary;
  started.push(summary.id);
  expect(res.code).toBe(2);
  expect(summary.error).toMatch(/cold-start SFT: .*\[set by coldStart\.lr; the run's config was frozen/);
  expect(res.stderr).toContain(`next: operaflow cancel ${summary.id}, fix the config, then operaflow train`);
  expect(res.stderr).not.toContain(`operaflow retry ${summary.id}`);
});

// Catches: a worker reading what a run's config points at outside the worker's roots (anyone who reaches
// Temporal can start a run); the refusal must name the key.
test("a worker refuses a run whose config names paths outside the worker's roots", async () => {
  const roots = tmpDir();
  const elsewhere = tmpDir();
  const dataset = join(elsewhere, 'rows.jsonl');
  writeFileSync(
    dataset,
    `${syntheticTasks({ writing: 10, math: 10, seed: 3 })
      .map((r) => JSON.stringify(r))
      .join('\n')}\n`,
  );
  const confinedEnv = testEnv(`blocked-roots-${process.pid}-`, { OPERAFLOW_WORKER_ROOTS: roots });
  const confined = await startWorker(confinedEnv);
  try {
    const config = writeConfig(
      smokeYaml({
        name: 'outside-roots',
        artifacts: join(roots, 'artifacts'),
        data: `{ source: ${JSON.stringify(dataset)}, evalFraction: 0.25, maxPromptTokens: 64 }`,
      }),
    );
    const res = await runCli(['train', config, '--wait', '--json'], confinedEnv);
    const summary = JSON.parse(lastLine(res.stdout)) as RunSummary;
    started.push(summary.id);
    expect(res.code).toBe(2);
    expect(summary.error).toContain(`this worker reads and writes only under ${roots}`);
    expect(summary.error).toContain(`data.source (${dataset})`);
    expect(summary.error).not.toContain('runtime.artifacts');
    expect(summary.stages.find((s) => s.stage === 'prepareDataset')?.attempts).toHaveLength(1);
  } finally {
    await confined.stop();
  }
});
