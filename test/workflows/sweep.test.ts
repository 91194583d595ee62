/**
 * The sweep workflow's own logic, with stand-in activities (no engine, no database) on the real Temporal
 * dev server: it runs its runs as child `trainingRun`s at most `parallel` at a time, a run that fails does
 * not stop the others, and cancelling the sweep cancels the runs it started and marks the rest cancelled.
 */
import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import type { RunStatusUpdate } from '../../db/queries';
import type { RunPlan } from '../../workflows/api';
import { sweepProgressQuery, sweepRun, type SweepInput } from '../../workflows/sweep';
import { workflowHarness, type Activities } from './harness';

jest.setTimeout(120_000);

const { client, withWorker } = workflowHarness();

/**
 * Stand-ins for a run with no RL iterations (dataset → SFT → evaluation): `evaluate` waits for `gate`, so
 * a test sees which runs are inside at the same time.
 */
function standIns(gate: (runId: string) => Promise<void>) {
  const statuses: { runId: string; update: RunStatusUpdate }[] = [];
  const inside = new Set<string>();
  let most = 0;
  const activities: Partial<Activities> = {
    async setRunStatus(runId, update) {
      statuses.push({ runId, update });
    },
    async appendEvent() {},
    async prepareDataset() {
      return { artifact: { uri: 'file:///d', sha256: 'd', bytes: 1 }, hash: 'h', train: 1, eval: 1 };
    },
    async coldStartSft() {
      return { checkpoint: { uri: 'file:///c', iteration: 0, sha256: 'c', files: {} }, steps: 1, finalLoss: 1 };
    },
    async evaluate({ runId, iteration }) {
      inside.add(runId);
      most = Math.max(most, inside.size);
      try {
        await gate(runId);
      } finally {
        inside.delete(runId);
      }
      const result = { iteration, prompts: 1, reward: 0.5, ppl: 1, reflection: 0, refLogp: -1, exactMatch: null };
      return { ...result, meanResponseTokens: 1, hiddenCheck: null, reflectionUseful: null, taskTypes: {} };
    },
  };
  return { activities, statuses, inside, most: () => most };
}

const sweepInput = (queue: string, n: number, parallel: number, plan: Partial<RunPlan> = {}): SweepInput => {
  const group = `g-${randomUUID()}`;
  return {
    group,
    parallel,
    runs: Array.from({ length: n }, (_, i) => ({
      runId: `${group}-${i}`,
      plan: {
        iterations: 0,
        rolloutShards: 1,
        continueAsNewEvery: 10,
        evalEvery: 0,
        taskQueues: { rollout: queue, train: queue },
        ...plan,
      },
    })),
  };
};

const startSweep = (queue: string, input: SweepInput) =>
  client().workflow.start(sweepRun, { taskQueue: queue, workflowId: `sweep-${input.group}`, args: [input] });

test('runs at most `parallel` at a time, in order; a run that fails does not stop the others', async () => {
  const s = standIns(() => new Promise((r) => setTimeout(r, 200)));
  const result = await withWorker(s.activities, async (q) => {
    const input = sweepInput(q, 5, 2);
    // An invalid plan fails its run's workflow at once (InvalidPlan).
    input.runs[1]!.plan = { ...input.runs[1]!.plan, rolloutShards: 0 };
    return (await startSweep(q, input)).result();
  });
  expect(s.most()).toBe(2);
  expect(result.status).toBe('completed');
  expect(result.runs.map((r) => r.status)).toEqual(['completed', 'failed', 'completed', 'completed', 'completed']);
  expect(result.runs[1]!.error).toMatch(/invalid run plan/);
  expect(result.runs.map((r) => r.runId)).toEqual(result.runs.map((_, i) => `${result.group}-${i}`));
});

test('cancelling the sweep cancels its running runs and marks the runs it had not started cancelled', async () => {
  // Evaluation waits until cancelled (heartbeating, so the cancellation reaches it).
  const s = standIns(async () => {
    const ctx = Context.current();
    for (;;) {
      ctx.heartbeat();
      await ctx.sleep(100);
    }
  });
  await withWorker(s.activities, async (q) => {
    const input = sweepInput(q, 4, 2, { heartbeatTimeoutMs: 2000 });
    const handle = await startSweep(q, input);
    while (s.inside.size < 2) await new Promise((r) => setTimeout(r, 50));
    const progress = await handle.query(sweepProgressQuery);
    expect(progress).toMatchObject({
      status: 'running',
      parallel: 2,
      pending: [`${input.group}-2`, `${input.group}-3`],
    });
    expect(progress.running.sort()).toEqual([`${input.group}-0`, `${input.group}-1`]);
    await handle.cancel();
    const result = await handle.result();
    expect(result.status).toBe('cancelled');
    expect(result.runs.map((r) => r.status)).toEqual(['cancelled', 'cancelled', 'cancelled', 'cancelled']);
    // Every run's row ends cancelled: the two that ran by their own workflow, the two others by the sweep.
    for (const r of result.runs)
      expect(s.statuses.filter((u) => u.runId === r.runId).at(-1)?.update).toMatchObject({
        status: 'cancelled',
        finished: true,
      });
    expect((await handle.query(sweepProgressQuery)).status).toBe('cancelled');
  });
});
