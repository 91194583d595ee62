/**
 * Workflow determinism: a real run (a worker process, real activities, real Temporal and PostgreSQL),
 * paused and resumed by signals and continued-as-new every iteration, is replayed event by event from
 * its histories with the current workflow code; any non-deterministic change (a new activity call
 * inserted without `patched`, Date/Math.random use, …) fails here with a DeterminismViolationError.
 * Histories committed under fixtures/ (written with UPDATE_REPLAY_FIXTURES=1) are replayed too, so a
 * change that would break runs already in flight on the previous code is caught as well.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils';
import { DefaultLogger, Runtime, Worker, bundleWorkflowCode, type WorkflowBundle } from '@temporalio/worker';
import { createDb, type DbHandle } from '../../db/client';
import { createRun, getRun } from '../../db/queries';
import { configHash, parseRunConfig } from '../../config/load';
import { pauseSignal, resumeSignal, trainingRun, type RunPlan } from '../../workflows/trainingRun';
import {
  smokeYaml,
  startWorker,
  testEnv,
  tmpDir,
  type WorkerProcess,
  removeTmpDirs,
  terminateOpenRuns,
} from '../integration/helpers';

jest.setTimeout(240_000);

const ROOT = resolve(__dirname, '..', '..');
const FIXTURES = join(__dirname, 'fixtures');
let bundle: WorkflowBundle;
let db: DbHandle;
let worker: WorkerProcess | undefined;

beforeAll(async () => {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  bundle = await bundleWorkflowCode({
    workflowsPath: join(ROOT, 'workflows', 'index.ts'),
    logger: new DefaultLogger('WARN'),
  });
  db = createDb();
});

const runIds: string[] = [];

afterAll(async () => {
  await terminateOpenRuns(runIds);
  await worker?.stop();
  await db?.close();
  removeTmpDirs();
});

async function waitForStatus(runId: string, status: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await getRun(db.db, runId))?.status !== status) {
    if (Date.now() > deadline) throw new Error(`run ${runId} did not reach ${status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('histories of a real run (signals, continue-as-new) replay deterministically', async () => {
  const prefix = `replay-${process.pid}-`;
  const queues = { rollout: `${prefix}rollout`, train: `${prefix}train` };
  const config = parseRunConfig(smokeYaml({ name: 'replay', artifacts: tmpDir() }), 'replay.yaml');
  const runId = `replay-${process.pid}-${Date.now()}`;
  runIds.push(runId);
  await createRun(db.db, {
    id: runId,
    name: config.name,
    status: 'pending',
    config,
    configHash: configHash(config),
    codeVersion: 'test',
    seed: config.seed,
    workflowId: runId,
  });
  const plan: RunPlan = {
    iterations: 2,
    rolloutShards: 2,
    continueAsNewEvery: 1,
    evalEvery: 1,
    taskQueues: queues,
  };

  // In-process workers would keep this jest process alive after the tests (native threads); a worker
  // process is also what production runs.
  worker = await startWorker(testEnv(prefix));
  const clientConnection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  const client = new Client({ connection: clientConnection });
  const handle = await client.workflow.start(trainingRun, {
    taskQueue: queues.train,
    workflowId: runId,
    args: [{ runId, plan }],
  });
  await handle.signal(pauseSignal);
  await waitForStatus(runId, 'paused', 60_000);
  await handle.signal(resumeSignal);
  const result = await handle.result();
  expect(result.status).toBe('completed');
  expect(result.iterations).toBe(2);

  // Every execution of the chain: the first, and one per continue-as-new.
  const histories: { name: string; history: unknown }[] = [];
  for await (const execution of client.workflow.list({ query: `WorkflowId = '${runId}'` })) {
    const history = await client.workflow.getHandle(runId, execution.runId).fetchHistory();
    histories.push({ name: execution.runId, history: JSON.parse(historyToJSON(history)) });
  }
  await clientConnection.close();
  expect(histories.length).toBe(2); // continue-as-new after iteration 1 of 2
  for (const { history } of histories) await Worker.runReplayHistory({ workflowBundle: bundle }, history, runId);

  if (process.env.UPDATE_REPLAY_FIXTURES) {
    mkdirSync(FIXTURES, { recursive: true });
    histories.forEach(({ history }, k) =>
      writeFileSync(join(FIXTURES, `trainingRun-${k}.json`), JSON.stringify(history)),
    );
  }
});

test('committed histories replay with the current workflow code', async () => {
  if (!existsSync(FIXTURES)) return;
  const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.json'));
  for (const file of files) {
    const history = historyFromJSON(JSON.parse(readFileSync(join(FIXTURES, file), 'utf8')));
    await Worker.runReplayHistory({ workflowBundle: bundle }, history, file);
  }
});
