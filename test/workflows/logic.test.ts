/**
 * The workflow's own logic, with stand-in activities (no engine, no database) on the real Temporal dev
 * server that the test setup runs: pause holds a run at a stage boundary, cancel ends it, a stage that
 * fails for good blocks the run until `retryStage` (an update refused when nothing is blocked),
 * continue-as-new carries the EMA baseline and the data position, and a resumed or cancelled run whose
 * workflow had closed does what its input says. Seconds per test, so these run on every change.
 */
import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { CheckpointRef, DatasetRef, EvalResult, RunState } from '../../activities/types';
import type { RunStatusUpdate } from '../../db/queries';
import {
  cancelSignal,
  pauseSignal,
  progressQuery,
  resumeSignal,
  retryStageUpdate,
  trainingRun,
  type RunPlan,
  type TrainingRunInput,
} from '../../workflows/trainingRun';
import { workflowHarness, type Activities } from './harness';

jest.setTimeout(120_000);

const { client, withWorker } = workflowHarness();

/** A stage that runs until it is cancelled (heartbeating, so the cancellation reaches it). */
async function runUntilCancelled(): Promise<void> {
  const ctx = Context.current();
  for (;;) {
    ctx.heartbeat();
    await ctx.sleep(100);
  }
}

const ref = (iteration: number): CheckpointRef => ({
  uri: `file:///ckpt/${iteration}`,
  iteration,
  sha256: `sha${iteration}`,
  files: {},
});
const dataset: DatasetRef = {
  artifact: { uri: 'file:///data.json', sha256: 'd', bytes: 1 },
  hash: 'h',
  train: 10,
  eval: 2,
};
const evalResult = (iteration: number): EvalResult => ({
  iteration,
  prompts: 2,
  reward: 0.5,
  ppl: 1,
  reflection: 0,
  refLogp: -1,
  exactMatch: null,
  meanResponseTokens: 3,
  hiddenCheck: null,
  reflectionUseful: null,
  taskTypes: {},
});

/** Stand-ins for the activities: each call is recorded; `hooks` change what a stage does. */
function standIns(
  hooks: {
    update?: (iteration: number) => Promise<void> | void;
    prepareDataset?: () => Promise<void> | void;
    recorded?: RunState | null;
  } = {},
) {
  const calls: { name: string; input: unknown }[] = [];
  const statuses: RunStatusUpdate[] = [];
  const record = (name: string, input: unknown) => calls.push({ name, input });
  const activities: Partial<Activities> = {
    async setRunStatus(_runId, update) {
      statuses.push(update);
    },
    async appendEvent(_runId, type) {
      record(`event:${type}`, null);
    },
    async recordedRunState() {
      record('recordedRunState', null);
      return hooks.recorded ?? null;
    },
    async prepareDataset(input) {
      record('prepareDataset', input);
      await hooks.prepareDataset?.();
      return dataset;
    },
    async coldStartSft(input) {
      record('coldStartSft', input);
      return { checkpoint: ref(0), steps: 1, finalLoss: 1 };
    },
    async evaluate(input) {
      record('evaluate', input);
      return evalResult(input.iteration);
    },
    async rollout(input) {
      record('rollout', input);
      return {
        artifact: { uri: `r${input.iteration}.${input.shard}`, sha256: 'r', bytes: 1 },
        prompts: 2,
        samples: 4,
        meanResponseTokens: 3,
      };
    },
    async score(input) {
      record('score', input);
      return { artifact: { uri: `s${input.iteration}.${input.shard}`, sha256: 's', bytes: 1 }, samples: 4 };
    },
    async reward(input) {
      record('reward', input);
      // A baseline that depends on the one before it, so a reset would show.
      return {
        artifact: { uri: `w${input.iteration}`, sha256: 'w', bytes: 1 },
        ema: (input.ema ?? 0) + 1,
        metrics: {},
      };
    },
    async update(input) {
      record('update', input);
      await hooks.update?.(input.iteration);
      return {
        checkpoint: ref(input.iteration),
        optimizer: null,
        ema: input.ema,
        dataPosition: input.dataPosition,
        metrics: {},
      };
    },
  };
  return {
    activities,
    calls,
    statuses,
    inputs: (name: string) => calls.filter((c) => c.name === name).map((c) => c.input as Record<string, unknown>),
  };
}

const plan = (queue: string, extra: Partial<RunPlan> = {}): RunPlan => ({
  iterations: 3,
  rolloutShards: 2,
  continueAsNewEvery: 100,
  evalEvery: 0,
  taskQueues: { rollout: queue, train: queue },
  ...extra,
});

const start = (queue: string, input: Omit<TrainingRunInput, 'runId'>) => {
  const runId = `logic-${randomUUID()}`;
  return client().workflow.start(trainingRun, { taskQueue: queue, workflowId: runId, args: [{ runId, ...input }] });
};

test('a run goes through its stages in order, the data position advancing by the prompts each rollout took', async () => {
  const s = standIns();
  const result = await withWorker(s.activities, async (q) => (await start(q, { plan: plan(q) })).result());
  expect(result).toMatchObject({ status: 'completed', iterations: 3, ema: 3, checkpoint: ref(3) });
  expect(
    s.calls
      .filter((c) => !c.name.startsWith('event'))
      .map((c) => c.name)
      .slice(0, 9),
  ).toEqual(['prepareDataset', 'coldStartSft', 'evaluate', 'rollout', 'rollout', 'score', 'score', 'reward', 'update']);
  // Two shards of 2 prompts each: 4 prompts per iteration.
  expect(s.inputs('update').map((u) => u.dataPosition)).toEqual([4, 8, 12]);
  expect(s.inputs('rollout').map((r) => r.dataPosition)).toEqual([0, 0, 4, 4, 8, 8]);
  expect(s.statuses.at(-1)).toMatchObject({ status: 'completed', finished: true, currentIteration: 3 });
});

test('continue-as-new every iteration carries the EMA baseline, the data position and the checkpoint', async () => {
  const s = standIns();
  const result = await withWorker(s.activities, async (q) =>
    (await start(q, { plan: plan(q, { continueAsNewEvery: 1 }) })).result(),
  );
  expect(result).toMatchObject({ status: 'completed', iterations: 3, ema: 3 });
  expect(s.inputs('reward').map((r) => r.ema)).toEqual([null, 1, 2]);
  expect(s.inputs('update').map((u) => u.dataPosition)).toEqual([4, 8, 12]);
  expect(s.inputs('rollout').map((r) => (r.checkpoint as CheckpointRef).iteration)).toEqual([0, 0, 1, 1, 2, 2]);
  expect(s.inputs('prepareDataset')).toHaveLength(1); // the continuation does not start over
});

test('pause holds the run at the next stage boundary; resume lets it go on', async () => {
  let releaseUpdate!: () => void;
  const gate = new Promise<void>((r) => (releaseUpdate = r));
  const s = standIns({ update: (i) => (i === 1 ? gate : undefined) });
  await withWorker(s.activities, async (q) => {
    const handle = await start(q, { plan: plan(q) });
    while (s.inputs('update').length === 0) await new Promise((r) => setTimeout(r, 50));
    await handle.signal(pauseSignal);
    releaseUpdate();
    while (!s.statuses.some((u) => u.status === 'paused')) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 500));
    expect(s.inputs('rollout').filter((r) => r.iteration === 2)).toEqual([]); // nothing new starts while paused
    expect((await handle.query(progressQuery)).status).toBe('paused');
    await handle.signal(resumeSignal);
    expect(await handle.result()).toMatchObject({ status: 'completed', iterations: 3 });
  });
});

test('cancel ends a running run as cancelled, at the iteration it reached', async () => {
  const s = standIns({ update: (i) => (i === 2 ? runUntilCancelled() : undefined) });
  await withWorker(s.activities, async (q) => {
    const handle = await start(q, { plan: plan(q) });
    while (s.inputs('update').length < 2) await new Promise((r) => setTimeout(r, 50));
    await handle.signal(cancelSignal, { reason: 'test' });
    expect(await handle.result()).toMatchObject({ status: 'cancelled', iterations: 1 });
  });
  expect(s.statuses.at(-1)).toMatchObject({ status: 'cancelled', finished: true, currentIteration: 1 });
});

test('a stage that fails for good blocks the run; retryStage (an update) runs it again; retry of a run not blocked is refused', async () => {
  let failures = 1;
  const s = standIns({
    prepareDataset: () => {
      if (failures-- > 0)
        throw ApplicationFailure.nonRetryable('data.jsonl:5: field reference is missing', 'PermanentError');
    },
  });
  await withWorker(s.activities, async (q) => {
    const handle = await start(q, { plan: plan(q, { iterations: 1 }) });
    while (!s.statuses.some((u) => u.status === 'blocked')) await new Promise((r) => setTimeout(r, 50));
    expect(s.statuses.find((u) => u.status === 'blocked')?.error).toMatch(
      /prepareDataset \(iteration 0, shard 0\): data\.jsonl:5/,
    );
    const { retried } = await handle.executeUpdate(retryStageUpdate, { args: [{ by: 'test' }] });
    expect(retried).toEqual([expect.objectContaining({ stage: 'prepareDataset', iteration: 0, shard: 0 })]);
    expect(await handle.result()).toMatchObject({ status: 'completed', iterations: 1 });
    expect(s.inputs('prepareDataset')).toHaveLength(2);
  });
  // Refused by the validator of a run that is not blocked (a fresh, still-running one).
  const t = standIns({ update: runUntilCancelled });
  await withWorker(t.activities, async (q) => {
    const handle = await start(q, { plan: plan(q, { iterations: 1 }) });
    while (t.inputs('update').length === 0) await new Promise((r) => setTimeout(r, 50));
    await expect(handle.executeUpdate(retryStageUpdate, { args: [{ by: 'test' }] })).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/is running, not blocked: nothing to retry/) },
    });
    await handle.terminate('test done');
  });
});

test('resume continues from the state the recorded stages give; cancel of a closed run records it and runs nothing', async () => {
  const recorded: RunState = {
    iteration: 2,
    dataset,
    reference: ref(0),
    checkpoint: ref(2),
    optimizer: null,
    ema: 7,
    dataPosition: 8,
    evalBefore: evalResult(0),
    evalLatest: evalResult(2),
  };
  const s = standIns({ recorded });
  const result = await withWorker(s.activities, async (q) =>
    (await start(q, { plan: plan(q), resume: true })).result(),
  );
  expect(result).toMatchObject({ status: 'completed', iterations: 3 });
  expect(s.inputs('prepareDataset')).toEqual([]);
  expect(s.inputs('reward').map((r) => [r.iteration, r.ema])).toEqual([[3, 7]]);
  expect(s.inputs('rollout').map((r) => r.dataPosition)).toEqual([8, 8]);

  // Stopped between iteration 2's update and its evaluation: the resumed run evaluates iteration 2 first.
  const e = standIns({ recorded: { ...recorded, evalLatest: evalResult(0) } });
  await withWorker(e.activities, async (q) =>
    (await start(q, { plan: plan(q, { evalEvery: 1 }), resume: true })).result(),
  );
  expect(e.inputs('evaluate').map((x) => x.iteration)).toEqual([2, 3]);
  expect(e.calls.findIndex((x) => x.name === 'evaluate')).toBeLessThan(e.calls.findIndex((x) => x.name === 'rollout'));
  // Its evaluation recorded: not run again.
  const f = standIns({ recorded: { ...recorded, evalLatest: evalResult(2) } });
  await withWorker(f.activities, async (q) =>
    (await start(q, { plan: plan(q, { evalEvery: 1 }), resume: true })).result(),
  );
  expect(f.inputs('evaluate').map((x) => x.iteration)).toEqual([3]);

  const c = standIns();
  const cancelled = await withWorker(c.activities, async (q) =>
    (await start(q, { plan: plan(q), cancel: true })).result(),
  );
  expect(cancelled.status).toBe('cancelled');
  expect(c.calls.map((x) => x.name)).toEqual(['event:cancelled']);
  // The iteration the run recorded is left as it was (this execution never knew its state).
  expect(c.statuses).toEqual([{ status: 'cancelled', finished: true }]);
});
