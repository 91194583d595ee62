/**
 * Invariance (metamorphic) tests through whole runs: changing only how a run is scheduled must not
 * change a single recorded value. Each variant of one tiny config is compared with a reference run as
 * digests of its samples (responses, rewards, advantages, checkpoint log-probs), its metrics and the
 * sha256 of every checkpoint file, the final one included:
 * - continue-as-new after every iteration vs never (100 > iterations): the EMA baseline, the data
 *   position and the optimizer state must cross the continuation intact;
 * - 1 and 3 rollout shards vs 2;
 * - two workers sharing the queues vs one;
 * - paused at a stage boundary and resumed vs not;
 * - cancelled after an iteration and resumed with `operaflow resume` vs uninterrupted.
 * A bug that is deterministic passes a comparison with a run of the same code, so these tests look for
 * bugs in what differs between the variants: state carried across boundaries, sharding, and resume.
 */
import type pg from 'pg';
import {
  pool,
  runCli,
  runIdOf,
  smokeYaml,
  startWorker,
  terminateOpenRuns,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
  removeTmpDirs,
  type WorkerProcess,
} from './helpers';
import { connect } from '../../scripts/cli/connect';
import { controlRun } from '../../scripts/cli/control';
import { expectSameRecord, runRecord, type RunRecord } from './records';

jest.setTimeout(600_000);

const oneWorker = testEnv(`inv1-${process.pid}-`);
const twoWorkers = testEnv(`inv2-${process.pid}-`);
const workers: WorkerProcess[] = [];
const started: string[] = [];
let db: pg.Pool;
let reference: RunRecord;

/** 3 iterations of 6 prompts (divisible into 1, 2 and 3 shards), evaluation every 2. */
const config = (name: string, runtime: { shards: number; continueAsNewEvery: number }) =>
  writeConfig(
    smokeYaml({
      name,
      artifacts: '',
      grpo: '{ iterations: 3, promptsPerIteration: 6, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 40 }',
      runtime: `{ rolloutShards: ${runtime.shards}, continueAsNewEvery: ${runtime.continueAsNewEvery}, maxStageAttempts: 2, artifacts: ${JSON.stringify(tmpDir())} }`,
    }).replace('eval: { every: 1,', 'eval: { every: 2,'),
  );

async function row(runId: string): Promise<{ status: string; current_iteration: number; error: string | null }> {
  const { rows } = await db.query<{ status: string; current_iteration: number; error: string | null }>(
    'select status, current_iteration, error from runs where id = $1',
    [runId],
  );
  const r = rows[0];
  if (!r) throw new Error(`no run ${runId}`);
  if (r.status === 'blocked' || r.status === 'failed')
    throw new Error(`run ${runId} is ${r.status}: ${r.error}\n${workers.map((w) => w.output()).join('\n---\n')}`);
  return r;
}

/** `train --wait` to completion; returns the run id. */
async function trainToEnd(env: NodeJS.ProcessEnv, file: string): Promise<string> {
  const res = await runCli(['train', file, '--wait', '--json'], env, 300_000);
  const id = runIdOf(res.stdout);
  started.push(id);
  if (res.code !== 0) throw new Error(`train exited ${res.code}\n${res.stderr}`);
  return id;
}

/** `train` without waiting; returns the run id. */
async function launch(env: NodeJS.ProcessEnv, file: string): Promise<string> {
  const res = await runCli(['train', file, '--json'], env);
  expect(res.code).toBe(0);
  const id = runIdOf(res.stdout);
  started.push(id);
  return id;
}

const completed = (runId: string) =>
  waitFor(
    `run ${runId} to complete`,
    async () => ((await row(runId)).status === 'completed' ? true : undefined),
    300_000,
    250,
  );

beforeAll(async () => {
  db = pool();
  workers.push(await startWorker(oneWorker), await startWorker(twoWorkers), await startWorker(twoWorkers));
  reference = await runRecord(
    db,
    await trainToEnd(oneWorker, config('inv-reference', { shards: 2, continueAsNewEvery: 100 })),
  );
  // The reference itself must be a full run, or every comparison below would be vacuous.
  expect(reference.samples.length).toBe(3 * 6 * 4 + 3 * 4); // train rollouts + eval before, at 2 and at 3
  expect(reference.finalCheckpoint).toMatch(/^[0-9a-f]{64}$/);
});

afterAll(async () => {
  await terminateOpenRuns(started);
  for (const w of workers) await w.stop();
  await db?.end();
  removeTmpDirs();
});

/** Sends an operator command the way `operaflow pause|cancel` does, without the CLI's start-up time. */
async function control(command: 'pause' | 'cancel', runId: string): Promise<void> {
  const services = await connect();
  try {
    await controlRun(services, command, runId, 'invariance-test');
  } finally {
    await services.close();
  }
}

test('continue-as-new after every iteration records what a run that never continues records', async () => {
  const runId = await trainToEnd(oneWorker, config('inv-can1', { shards: 2, continueAsNewEvery: 1 }));
  expectSameRecord('continueAsNewEvery 1 vs 100', await runRecord(db, runId), reference);
});

test.each([1, 3])('%i rollout shard(s) record what 2 shards record', async (shards) => {
  const runId = await trainToEnd(oneWorker, config(`inv-shards${shards}`, { shards, continueAsNewEvery: 100 }));
  expectSameRecord(`rolloutShards ${shards} vs 2`, await runRecord(db, runId), reference);
});

test('two workers sharing the queues record what one worker records', async () => {
  const runId = await trainToEnd(twoWorkers, config('inv-two-workers', { shards: 2, continueAsNewEvery: 100 }));
  // Both workers must actually have run stages of this run, or this is the one-worker case again.
  const { rows } = await db.query<{ n: number }>(
    "select count(distinct worker)::int as n from stage_attempts where run_id = $1 and stage in ('rollout', 'score')",
    [runId],
  );
  expect(rows[0]!.n).toBe(2);
  expectSameRecord('two workers vs one', await runRecord(db, runId), reference);
});

test('paused at a stage boundary and resumed records what an uninterrupted run records', async () => {
  const runId = await launch(oneWorker, config('inv-paused', { shards: 2, continueAsNewEvery: 100 }));
  await waitFor(
    'iteration 1',
    async () => ((await row(runId)).current_iteration >= 1 ? true : undefined),
    120_000,
    100,
  );
  // In this process, like the cancel below: the CLI's start-up can outlast the two iterations left.
  await control('pause', runId);
  await waitFor('paused', async () => ((await row(runId)).status === 'paused' ? true : undefined), 60_000, 100);
  const attempts = async () =>
    (await db.query<{ n: number }>('select count(*)::int as n from stage_attempts where run_id = $1', [runId])).rows[0]!
      .n;
  const before = await attempts();
  await new Promise((r) => setTimeout(r, 2000));
  expect(await attempts()).toBe(before); // nothing starts while paused
  expect((await runCli(['resume', runId], oneWorker)).code).toBe(0);
  await completed(runId);
  expectSameRecord('paused + resumed vs uninterrupted', await runRecord(db, runId), reference);
});

test('cancelled after an iteration and resumed records what an uninterrupted run records', async () => {
  const runId = await launch(oneWorker, config('inv-cancelled', { shards: 2, continueAsNewEvery: 100 }));
  await waitFor(
    'iteration 1',
    async () => ((await row(runId)).current_iteration >= 1 ? true : undefined),
    120_000,
    100,
  );
  // In this process (what `operaflow cancel` calls): the CLI's start-up takes longer than the two
  // iterations left, and the cancel must land mid-run.
  await control('cancel', runId);
  await waitFor('cancelled', async () => ((await row(runId)).status === 'cancelled' ? true : undefined), 60_000, 100);
  const cancelledAt = (await row(runId)).current_iteration;
  expect(cancelledAt).toBeLessThan(3);
  const resumed = await runCli(['resume', runId], oneWorker);
  expect(resumed.code).toBe(0);
  // It resumes from the last iteration whose update completed, which depends on how far the run got before
  // the cancel landed (the CLI takes a second or two to start): 1, 2, or 3 with the final evaluation left.
  expect(resumed.stdout).toMatch(/resumed run .* from iteration [123]\b/);
  await completed(runId);
  expectSameRecord('cancelled + resumed vs uninterrupted', await runRecord(db, runId), reference);
});
