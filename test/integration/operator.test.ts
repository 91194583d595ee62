/**
 * Operator commands through the real CLI: pause holds a run at the next stage boundary, resume releases
 * it, cancel ends it (`cancelled`, audit events by whom), and `resume` of the cancelled run starts a
 * continuation from its last completed iteration that runs to completion. Starting the same run id
 * twice attaches instead of starting a second workflow.
 */
import type pg from 'pg';
import type { RunSummary } from '../../db/queries';
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
} from './helpers';

jest.setTimeout(300_000);

const env = testEnv(`operator-${process.pid}-`);
let worker: WorkerProcess;
let db: pg.Pool;

beforeAll(async () => {
  db = pool();
  worker = await startWorker(env);
});

const runIds: string[] = [];

afterAll(async () => {
  await terminateOpenRuns(runIds);
  await worker?.stop();
  await db?.end();
  removeTmpDirs();
});

/** The run's row; a run that blocked or failed fails the test at once, with its error. */
async function status(runId: string): Promise<{ status: string; current_iteration: number }> {
  const { rows } = await db.query<{ status: string; current_iteration: number; error: string | null }>(
    'select status, current_iteration, error from runs where id = $1',
    [runId],
  );
  const row = rows[0]!;
  if (row.status === 'blocked' || row.status === 'failed')
    throw new Error(`run ${runId} is ${row.status}: ${row.error}\n${worker.output()}`);
  return row;
}

test('pause, resume, cancel, then resume the cancelled run from its last completed iteration', async () => {
  const config = writeConfig(
    smokeYaml({
      name: 'operator',
      artifacts: tmpDir(),
      // Long enough that the cancel below lands while iterations remain (an iteration takes about a second).
      grpo: '{ iterations: 12, promptsPerIteration: 4, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 48 }',
    }),
  );
  const runId = `operator-${process.pid}-${Date.now()}`;
  runIds.push(runId);
  const started = await runCli(['train', config, '--id', runId], env);
  expect(started.code).toBe(0);
  expect(started.stdout).toContain(`started run ${runId}`);

  // The same id again attaches to the live run instead of starting another.
  const attached = await runCli(['train', config, '--id', runId], env);
  expect(attached.code).toBe(0);
  expect(attached.stdout).toContain(`attached to run ${runId}`);

  await waitFor(
    'iteration 1',
    async () => ((await status(runId)).current_iteration >= 1 ? true : undefined),
    120_000,
    200,
  );
  expect(await runCli(['pause', runId], env)).toMatchObject({ code: 0 }); // on failure, stderr is shown
  await waitFor('paused', async () => ((await status(runId)).status === 'paused' ? true : undefined), 60_000, 200);
  const pausedAt = (await status(runId)).current_iteration;
  await new Promise((r) => setTimeout(r, 3000));
  // Nothing new starts while paused.
  expect((await status(runId)).current_iteration).toBe(pausedAt);
  expect((await status(runId)).status).toBe('paused');

  expect(await runCli(['resume', runId], env)).toMatchObject({ code: 0 }); // on failure, stderr is shown
  await waitFor(
    'running again',
    async () => ((await status(runId)).status === 'running' ? true : undefined),
    60_000,
    200,
  );

  expect(await runCli(['cancel', runId], env)).toMatchObject({ code: 0 }); // on failure, stderr is shown
  await waitFor(
    'cancelled',
    async () => ((await status(runId)).status === 'cancelled' ? true : undefined),
    60_000,
    200,
  );
  const cancelledAt = (await status(runId)).current_iteration;
  expect(cancelledAt).toBeLessThan(12);

  const resumed = await runCli(['resume', runId], env);
  expect(resumed.code).toBe(0);
  // From the last iteration whose update completed (one cancelled mid-save may have completed too).
  const from = Number(/from iteration (\d+)/.exec(resumed.stdout)?.[1]);
  expect(from).toBeGreaterThanOrEqual(cancelledAt);
  const done = await waitFor(
    'completed',
    async () => {
      const s = await status(runId);
      return s.status === 'completed' ? s : undefined;
    },
    150_000,
  );
  expect(done.current_iteration).toBe(12);

  const show = JSON.parse(lastLine((await runCli(['show', runId, '--json'], env)).stdout)) as RunSummary;
  const types = show.events.map((e) => e.type);
  for (const t of ['started', 'attached', 'paused', 'resumed', 'cancelled']) expect(types).toContain(t);
  expect(show.events.find((e) => e.type === 'paused')!.actor).toMatch(/@/);
  // The continuation redid no completed update: one completed update attempt per iteration.
  const updates = show.stages.filter((s) => s.stage === 'update');
  expect(updates.map((u) => u.iteration)).toEqual(Array.from({ length: 12 }, (_, k) => k + 1));
  for (const u of updates) expect(u.attempts.filter((a) => a.status === 'completed')).toHaveLength(1);
  const { rows } = await db.query<{ n: number }>(
    "select count(*)::int as n from samples where run_id = $1 and split = 'train'",
    [runId],
  );
  expect(rows[0]!.n).toBe(12 * 4 * 4);
});
