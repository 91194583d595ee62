/**
 * The crash-safety paths, each driven directly (real PostgreSQL, real Temporal, real workers):
 * - a checkpoint whose files (weights, optimizer, config, trainer state) do not match the sha256
 *   recorded when it was written is refused, as is one with a recorded file missing or an extra one;
 * - a completed stage is not executed again: calling its activity returns the recorded output with no
 *   engine call and no new attempt;
 * - a stage retried after it wrote its rows (an attempt that died before recording completion)
 *   overwrites those rows in place: no duplicate, the new values win (samples, metrics, artifact rows);
 * - the update stage, its worker SIGKILLed after a partial checkpoint, resumes on another worker from
 *   that partial checkpoint and ends with exactly what an uninterrupted run records.
 */
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import type pg from 'pg';
import { createActivities } from '../../activities';
import { loadCheckpointChecked, saveCheckpointRecorded } from '../../activities/engine';
import { pathToUri, storeAt } from '../../activities/store';
import type {
  CheckpointRef,
  DatasetRef,
  RolloutOutput,
  ScoreOutput,
  RewardOutput,
  UpdateOutput,
} from '../../activities/types';
import { createDb, type DbHandle } from '../../db/client';
import { createRun } from '../../db/queries';
import { modelPresets } from '../../engine/config';
import { initWeights, type Weights } from '../../engine/model';
import { engineStats } from '../../engine/ort';
import { configHash, parseRunConfig } from '../../config/load';
import { callActivity } from './call-activity.workflow';
import {
  pool,
  removeTmpDirs,
  runCli,
  runIdOf,
  smokeYaml,
  startWorker,
  terminateOpenRuns,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
  type WorkerProcess,
} from './helpers';
import { expectSameRecord, runRecord } from './records';

jest.setTimeout(400_000);

let db: pg.Pool;
let dbh: DbHandle;
const workers: WorkerProcess[] = [];
const started: string[] = [];

beforeAll(() => {
  db = pool();
  dbh = createDb(process.env.DATABASE_URL);
});

afterAll(async () => {
  await terminateOpenRuns(started);
  for (const w of workers) await w.stop();
  await dbh?.close();
  await db?.end();
  removeTmpDirs();
});

async function runRow(runId: string): Promise<{ status: string; error: string | null }> {
  const { rows } = await db.query<{ status: string; error: string | null }>(
    'select status, error from runs where id = $1',
    [runId],
  );
  const r = rows[0]!;
  if (r.status === 'blocked' || r.status === 'failed')
    throw new Error(`run ${runId} is ${r.status}: ${r.error}\n${workers.map((w) => w.output()).join('\n---\n')}`);
  return r;
}

describe('checkpoint files are verified against their recorded sha256', () => {
  const config = modelPresets.tiny;
  let ref: CheckpointRef;
  let dir: string;

  beforeAll(async () => {
    const runId = `ckpt-${process.pid}-${Date.now()}`;
    const run = parseRunConfig(smokeYaml({ name: 'ckpt', artifacts: tmpDir() }), 'ckpt.yaml');
    await createRun(dbh.db, {
      id: runId,
      name: 'ckpt',
      status: 'pending',
      config: run,
      configHash: configHash(run),
      codeVersion: 'test',
      seed: 1,
      workflowId: runId,
    });
    const weights = initWeights(config, 1);
    const moments = (scale: number): Weights =>
      new Map([...weights].map(([n, w]) => [n, w.map((_, k) => scale * ((k % 7) + 1))]));
    dir = join(tmpDir(), 'iter-0001');
    ({ checkpoint: ref } = await saveCheckpointRecorded(dbh.db, storeAt(tmpDir()), runId, 1, dir, {
      config,
      weights,
      optimizer: { step: 3, m: moments(1e-3), v: moments(1e-6) },
      extra: { iteration: 1, ema: -2.5, dataPosition: 8 },
    }));
    // The reference records every file, with the hashes the artifacts table holds.
    const { rows } = await db.query<{ name: string; sha256: string }>(
      'select name, sha256 from artifacts where run_id = $1',
      [runId],
    );
    expect(Object.fromEntries(rows.map((r) => [r.name, r.sha256]))).toEqual(ref.files);
    expect(Object.keys(ref.files).sort()).toEqual([
      'config.json',
      'model.safetensors',
      'optimizer.safetensors',
      'trainer_state.json',
    ]);
  });

  /** A copy of the checkpoint directory, changed by `edit`, under the recorded reference. */
  function tampered(edit: (copy: string) => void): CheckpointRef {
    const copy = join(tmpDir(), 'copy');
    cpSync(dir, copy, { recursive: true });
    edit(copy);
    return { ...ref, uri: pathToUri(copy) };
  }

  test('the untouched checkpoint loads, optimizer and trainer state included', async () => {
    const ckpt = await loadCheckpointChecked(ref);
    expect(ckpt.optimizer?.step).toBe(3);
    expect(ckpt.extra).toEqual({ iteration: 1, ema: -2.5, dataPosition: 8 });
  });

  test.each(['model.safetensors', 'optimizer.safetensors', 'config.json', 'trainer_state.json'])(
    'one changed byte in %s is refused',
    async (name) => {
      const bad = tampered((copy) => {
        const bytes = readFileSync(join(copy, name));
        // The last byte: inside tensor data (safetensors) or the final newline (JSON), so the file still parses.
        bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0x01, bytes.length - 1);
        writeFileSync(join(copy, name), bytes);
      });
      await expect(loadCheckpointChecked(bad)).rejects.toThrow(
        new RegExp(
          `does not match its recorded hashes: ${name.replace('.', '\\.')} has sha256 [0-9a-f]{64}, recorded ${ref.files[name]}`,
        ),
      );
    },
  );

  test('a recorded file that is missing, or a checkpoint file that was never recorded, is refused', async () => {
    await expect(
      loadCheckpointChecked(tampered((copy) => rmSync(join(copy, 'optimizer.safetensors')))),
    ).rejects.toThrow(/optimizer\.safetensors is missing/);
    // An optimizer file slipped into a checkpoint recorded without one would be loaded as AdamW state.
    const withoutOptimizer = Object.fromEntries(
      Object.entries(ref.files).filter(([name]) => name !== 'optimizer.safetensors'),
    );
    const stray = { ...tampered(() => {}), files: withoutOptimizer };
    await expect(loadCheckpointChecked(stray)).rejects.toThrow(
      /optimizer\.safetensors is present but was not recorded/,
    );
    await expect(loadCheckpointChecked({ ...ref, files: { ...ref.files, 'extra.bin': 'ab' } })).rejects.toThrow(
      /extra\.bin is recorded but is not a checkpoint file/,
    );
  });
});

describe('stages driven directly on a completed run', () => {
  const env = testEnv(`crash-${process.pid}-`);
  const queue = `crash-direct-${process.pid}`;
  let runId: string;
  let client: Client;
  let clientConnection: Connection;
  let nativeConnection: NativeConnection;
  let worker: Worker;
  let running: Promise<void>;
  let calls = 0;
  const logs: string[] = [];

  /** The recorded output of a completed stage. */
  async function output<T>(stage: string, iteration: number, shard = 0): Promise<T> {
    const { rows } = await db.query<{ output: T }>(
      "select output from stage_attempts where run_id = $1 and stage = $2 and iteration = $3 and shard = $4 and status = 'completed'",
      [runId, stage, iteration, shard],
    );
    if (!rows[0]) throw new Error(`no completed ${stage} ${iteration}/${shard}`);
    return rows[0].output;
  }
  const attempts = async (stage: string, iteration: number) =>
    (
      await db.query<{ attempt: number; status: string }>(
        'select attempt, status from stage_attempts where run_id = $1 and stage = $2 and iteration = $3 order by attempt',
        [runId, stage, iteration],
      )
    ).rows;

  /** Runs one activity through the in-process worker; returns its output and the engine calls it made. */
  async function drive<T>(name: string, input: unknown): Promise<{ out: T; engineRuns: number }> {
    const before = engineStats().runs;
    const out = (await client.workflow.execute(callActivity, {
      taskQueue: queue,
      workflowId: `${runId}-direct-${++calls}`,
      args: [name as never, input],
    })) as T;
    return { out, engineRuns: engineStats().runs - before };
  }

  beforeAll(async () => {
    const w = await startWorker(env);
    workers.push(w);
    const res = await runCli(
      ['train', writeConfig(smokeYaml({ name: 'crash-direct', artifacts: tmpDir() })), '--wait', '--json'],
      env,
    );
    runId = runIdOf(res.stdout);
    started.push(runId);
    if (res.code !== 0) throw new Error(`train exited ${res.code}\n${res.stderr}\n${w.output()}`);
    await w.stop();

    try {
      Runtime.install({ logger: new DefaultLogger('WARN') });
    } catch {
      // installed already by another test file in this jest process
    }
    nativeConnection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS });
    worker = await Worker.create({
      connection: nativeConnection,
      taskQueue: queue,
      workflowsPath: require.resolve('./call-activity.workflow'),
      activities: createActivities({ db: dbh.db, worker: 'in-process-test', log: (line) => logs.push(line) }),
    });
    running = worker.run();
    clientConnection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection: clientConnection });
  });

  afterAll(async () => {
    worker?.shutdown();
    await running;
    await nativeConnection?.close();
    await clientConnection?.close();
  });

  test('a completed stage returns its recorded output without running the engine or recording an attempt', async () => {
    const dataset = await output<DatasetRef>('prepareDataset', 0);
    const sft = await output<{ checkpoint: CheckpointRef }>('coldStartSft', 0);
    // Control: a stage that never ran (evaluation at iteration 9) does run the engine and records an attempt.
    const fresh = await drive<{ prompts: number }>('evaluate', {
      runId,
      iteration: 9,
      dataset,
      checkpoint: sft.checkpoint,
    });
    expect(fresh.engineRuns).toBeGreaterThan(0);
    expect(await attempts('evaluate', 9)).toEqual([{ attempt: 1, status: 'completed' }]);
    const again = await drive<{ prompts: number }>('evaluate', {
      runId,
      iteration: 9,
      dataset,
      checkpoint: sft.checkpoint,
    });
    expect(again).toEqual({ out: fresh.out, engineRuns: 0 });
    expect(await attempts('evaluate', 9)).toHaveLength(1);

    // Stages the run completed: scoring and the update of iteration 1.
    const rollout = await output<RolloutOutput>('rollout', 1, 0);
    const score = await drive<ScoreOutput>('score', {
      runId,
      iteration: 1,
      shard: 0,
      checkpoint: sft.checkpoint,
      rollout,
    });
    expect(score).toEqual({ out: await output<ScoreOutput>('score', 1, 0), engineRuns: 0 });
    const rewards = await output<RewardOutput>('reward', 1);
    const recordedUpdate = await output<UpdateOutput>('update', 1);
    const update = await drive<UpdateOutput>('update', {
      runId,
      iteration: 1,
      checkpoint: sft.checkpoint,
      reference: sft.checkpoint,
      rewards,
      ema: rewards.ema,
      dataPosition: recordedUpdate.dataPosition,
    });
    expect(update).toEqual({ out: recordedUpdate, engineRuns: 0 });
    expect(await attempts('update', 1)).toEqual([{ attempt: 1, status: 'completed' }]);
  });

  test('a stage retried after writing its rows overwrites them in place: no duplicates, the new values win', async () => {
    const snapshot = async () => ({
      samples: (
        await db.query(
          "select prompt_id, sample_index, reward, advantage, ppl from samples where run_id = $1 and split = 'train' and iteration = 2 order by prompt_id, sample_index",
          [runId],
        )
      ).rows,
      metrics: (await db.query('select name, value from metrics where run_id = $1 and step = 2 order by name', [runId]))
        .rows,
      artifact: (
        await db.query(
          "select uri, sha256, bytes from artifacts where run_id = $1 and kind = 'rewards' and iteration = 2",
          [runId],
        )
      ).rows,
    });
    const original = await snapshot();
    expect(original.samples).toHaveLength(16);
    expect(original.artifact).toHaveLength(1);

    // An attempt that wrote its rows and died before recording completion, with values that differ.
    await db.query(
      "update stage_attempts set status = 'failed', error = 'killed (test)' where run_id = $1 and stage = 'reward' and iteration = 2",
      [runId],
    );
    await db.query(
      "update samples set reward = reward + 1, advantage = 0, ppl = -1 where run_id = $1 and split = 'train' and iteration = 2",
      [runId],
    );
    await db.query("update metrics set value = 42 where run_id = $1 and step = 2 and name like 'reward/%'", [runId]);
    await db.query(
      "update artifacts set sha256 = repeat('0', 64), bytes = 1 where run_id = $1 and kind = 'rewards' and iteration = 2",
      [runId],
    );
    expect(await snapshot()).not.toEqual(original);

    const scores = [await output<ScoreOutput>('score', 2, 0), await output<ScoreOutput>('score', 2, 1)];
    const ema = (await output<RewardOutput>('reward', 1)).ema;
    const retried = await drive<RewardOutput>('reward', { runId, iteration: 2, scores, ema });
    expect(await snapshot()).toEqual(original);
    expect(retried.out.artifact.sha256).toBe((original.artifact[0] as { sha256: string }).sha256);
    expect(await attempts('reward', 2)).toEqual([
      { attempt: 1, status: 'failed' },
      { attempt: 2, status: 'completed' },
    ]);
  });

  /** The activity failure a driven stage ended with. */
  async function failureOf(name: string, input: unknown): Promise<{ message: string; nonRetryable: boolean }> {
    try {
      await drive(name, input);
    } catch (err) {
      let e = err as { cause?: unknown; message: string; nonRetryable?: boolean };
      while (e.cause && e.nonRetryable === undefined) e = e.cause as typeof e;
      return { message: e.message, nonRetryable: Boolean(e.nonRetryable) };
    }
    throw new Error(`${name} did not fail`);
  }

  test('a stage failing with its own error blocks after runtime.maxStageAttempts (2 here); a lost attempt does not count', async () => {
    // Scoring from a rollout artifact whose recorded sha256 does not match the file: an error of the stage.
    const sft = await output<{ checkpoint: CheckpointRef }>('coldStartSft', 0);
    const rollout = await output<RolloutOutput>('rollout', 1, 0);
    const input = {
      runId,
      iteration: 5,
      shard: 0,
      checkpoint: sft.checkpoint,
      rollout: { ...rollout, artifact: { ...rollout.artifact, sha256: '0'.repeat(64) } },
    };
    const first = await failureOf('score', input);
    expect(first).toMatchObject({
      nonRetryable: false,
      message: expect.stringMatching(/sha256 [0-9a-f]{64} does not match the recorded 0{64}/),
    });
    // A worker that died during the stage (recorded as lost) is no failure of the stage.
    await db.query(
      "insert into stage_attempts (run_id, stage, iteration, shard, attempt, status, error) values ($1, 'score', 5, 0, 2, 'lost', 'abandoned (test)')",
      [runId],
    );
    const second = await failureOf('score', input);
    expect(second).toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(/failed 2 time\(s\): runtime\.maxStageAttempts reached/),
    });
    expect((await attempts('score', 5)).map((a) => a.status)).toEqual(['failed', 'lost', 'failed']);
  });

  test("an operator's retry resumes cold-start SFT from the partial checkpoint its failed attempt recorded", async () => {
    const { rows } = await db.query<{
      id: number;
      progress: { step: number; partialStep: number; partialFiles: Record<string, string> };
    }>(
      "select id, progress from stage_attempts where run_id = $1 and stage = 'coldStartSft' and status = 'completed'",
      [runId],
    );
    // 20 steps, a partial checkpoint every 10: the attempt recorded where a retry can pick up.
    expect(rows[0]!.progress).toMatchObject({
      step: 10,
      partialStep: 10,
      partialFiles: expect.objectContaining({ 'optimizer.safetensors': expect.stringMatching(/^[0-9a-f]{64}$/) }),
    });
    const original = await output<{ checkpoint: CheckpointRef }>('coldStartSft', 0);
    // The stage failed after that point, and an operator retried the run (a new activity: no heartbeat).
    await db.query("update stage_attempts set status = 'failed', error = 'failed (test)' where id = $1", [rows[0]!.id]);
    await db.query("insert into events (run_id, type, actor) values ($1, 'retried', 'test')", [runId]);
    const dataset = await output<DatasetRef>('prepareDataset', 0);
    logs.length = 0;
    const again = await drive<{ checkpoint: CheckpointRef; steps: number }>('coldStartSft', {
      runId,
      iteration: 0,
      dataset,
    });
    expect(logs.join('\n')).toContain('coldStartSft attempt 2: resumes from the partial checkpoint at step 10');
    // Weights and AdamW state came back exactly: the same final checkpoint as the uninterrupted SFT.
    expect(again.out.checkpoint.sha256).toBe(original.checkpoint.sha256);
  });
});

test('the update stage resumes from its partial checkpoint after its worker is killed, and ends as an uninterrupted run does', async () => {
  // A long update: 32 rollouts, mini-batches of 1, 48 epochs = 1536 steps, a partial checkpoint every 384.
  const env = testEnv(`crash-update-${process.pid}-`, { OPERAFLOW_HEARTBEAT_TIMEOUT: '8' });
  const config = (name: string) =>
    writeConfig(
      smokeYaml({
        name,
        artifacts: tmpDir(),
        grpo: '{ iterations: 1, promptsPerIteration: 8, groupSize: 4, miniBatchSize: 1, epochs: 48, lr: 0.001, maxNewTokens: 48 }',
      }),
    );
  const first = await startWorker(env);
  workers.push(first);
  const ref = await runCli(['train', config('update-reference'), '--wait', '--json'], env);
  const referenceRun = runIdOf(ref.stdout);
  started.push(referenceRun);
  expect(ref.code).toBe(0);

  const launched = await runCli(['train', config('update-killed'), '--json'], env);
  const runId = runIdOf(launched.stdout);
  started.push(runId);
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  let partialStep: number;
  try {
    const handle = new Client({ connection }).workflow.getHandle(runId);
    // Kill once the server holds a heartbeat of the update that names a partial checkpoint.
    partialStep = await waitFor(
      'an update heartbeat naming a partial checkpoint',
      async () => {
        await runRow(runId);
        const pending = (await handle.describe()).raw.pendingActivities ?? [];
        for (const p of pending) {
          const payload = p.heartbeatDetails?.payloads?.[0];
          if (p.activityType?.name !== 'update' || !payload) continue;
          const details = defaultPayloadConverter.fromPayload<{ step: number; partialStep?: number }>(payload as never);
          // Well before the end: heartbeats reach the server up to 2 s late, and the kill must land mid-update.
          if (details.partialStep !== undefined && details.step <= 1152) return details.partialStep;
        }
        return undefined;
      },
      120_000,
      100,
    );
  } finally {
    await connection.close();
  }
  await first.kill();
  const second = await startWorker(env);
  workers.push(second);
  await waitFor(
    'the run to complete',
    async () => ((await runRow(runId)).status === 'completed' ? true : undefined),
    180_000,
  );

  expect(second.output()).toContain(`update attempt 2: resumes from the partial checkpoint at step ${partialStep}`);
  const { rows } = await db.query<{ attempt: number; status: string }>(
    "select attempt, status from stage_attempts where run_id = $1 and stage = 'update' order by attempt",
    [runId],
  );
  expect(rows).toEqual([
    { attempt: 1, status: 'lost' }, // the worker died: no fault of the stage
    { attempt: 2, status: 'completed' },
  ]);
  // Weights, AdamW moments and the loss statistics all came back from the partial checkpoint.
  expectSameRecord(
    'update resumed after a kill vs uninterrupted',
    await runRecord(db, runId),
    await runRecord(db, referenceRun),
  );
  // The partial checkpoints are files of this run's store, gone or not, never recorded as artifacts.
  const { rows: partials } = await db.query("select uri from artifacts where run_id = $1 and uri like '%partial%'", [
    runId,
  ]);
  expect(partials).toEqual([]);
});
