/**
 * `sweepRun`: the runs of a sweep (`operaflow sweep`), started as child `trainingRun` workflows at most
 * `parallel` at a time. The CLI records every run's row before it starts this workflow; what the sweep
 * adds is the schedule, and it is as durable as a run: a killed worker costs a replay, not the sweep
 * (each child is a durable run of its own, and the sweep only waits on them).
 *
 * A run that fails or is cancelled does not stop the sweep: its outcome is noted and the next run starts.
 * Cancelling the sweep cancels the runs it started (they record `cancelled` themselves) and marks the
 * runs it had not started yet as cancelled, so no row stays `pending` for a workflow that never comes.
 * Deterministic code only: the one effect of its own (those rows) is an activity.
 */
import {
  CancellationScope,
  ParentClosePolicy,
  defineQuery,
  isCancellation,
  proxyActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { TASK_QUEUES, type RunPlan } from './api';
import { SHORT, trainingRun } from './trainingRun';

/** The sweep's workflow id: one sweep per group. */
export const sweepWorkflowId = (group: string): string => `sweep-${group}`;

export interface SweepInput {
  group: string;
  /** In the order they start; each row is recorded (status pending) before the sweep starts. */
  runs: { runId: string; plan: RunPlan }[];
  /** How many runs train at the same time (at least 1). */
  parallel: number;
}

/** `failed`: the run's workflow failed or could not be started (`error` says why). */
export type SweepRunStatus = 'completed' | 'cancelled' | 'failed';

export interface SweepRunOutcome {
  runId: string;
  status: SweepRunStatus;
  error?: string;
}

export interface SweepResult {
  group: string;
  status: 'completed' | 'cancelled';
  runs: SweepRunOutcome[];
}

export interface SweepProgress {
  group: string;
  status: 'running' | 'cancelling' | 'completed' | 'cancelled';
  parallel: number;
  pending: string[];
  running: string[];
  finished: SweepRunOutcome[];
}

export const sweepProgressQuery = defineQuery<SweepProgress>('sweepProgress');

type Activities = ReturnType<typeof createActivities>;

/** The message of the innermost cause: a child's failure wraps the error that failed the run. */
function innermostMessage(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

export async function sweepRun(input: SweepInput): Promise<SweepResult> {
  const { group, runs } = input;
  const parallel = Math.max(1, Math.floor(input.parallel));
  // The sweep runs on the train queue of its deployment, which also serves the runs' database writes.
  const db = proxyActivities<Activities>({ ...SHORT, taskQueue: workflowInfo().taskQueue });
  const pending = runs.map((r) => r.runId);
  const running = new Set<string>();
  const finished: SweepRunOutcome[] = [];
  let cancelled = false;
  let done = false;
  CancellationScope.current().cancelRequested.catch(() => {
    cancelled = true;
  });
  setHandler(sweepProgressQuery, () => ({
    group,
    status: done ? (cancelled ? 'cancelled' : 'completed') : cancelled ? 'cancelling' : 'running',
    parallel,
    pending: [...pending],
    running: [...running],
    finished: [...finished],
  }));

  /** A run the sweep will not start now: its row says so (the sweep owns it until its workflow starts). */
  async function cancelUnstarted(runId: string): Promise<SweepRunOutcome> {
    await CancellationScope.nonCancellable(async () => {
      await db.setRunStatus(runId, { status: 'cancelled', finished: true });
      await db.appendEvent(runId, 'cancelled', 'workflow', {
        sweep: workflowInfo().workflowId,
        note: 'the sweep was cancelled before this run started',
      });
    });
    return { runId, status: 'cancelled' };
  }

  async function runOne(run: SweepInput['runs'][number]): Promise<SweepRunOutcome> {
    const { runId, plan } = run;
    if (cancelled) return cancelUnstarted(runId);
    let started = false;
    try {
      const child = await startChild(trainingRun, {
        workflowId: runId,
        taskQueue: plan.taskQueues?.train ?? TASK_QUEUES.train,
        args: [{ runId, plan }],
        // The sweep closing (terminated, timed out) must not leave runs training that nobody waits for.
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      });
      started = true;
      running.add(runId);
      const result = await child.result();
      return { runId, status: result.status };
    } catch (err) {
      if (isCancellation(err)) return started ? { runId, status: 'cancelled' } : cancelUnstarted(runId);
      return { runId, status: 'failed', error: innermostMessage(err) };
    } finally {
      running.delete(runId);
    }
  }

  const outcomes = new Map<string, SweepRunOutcome>();
  let next = 0;
  /** One slot of `parallel`: takes the next run as soon as its last one ends. */
  async function lane(): Promise<void> {
    while (next < runs.length) {
      const run = runs[next++]!;
      pending.shift();
      const outcome = await runOne(run);
      outcomes.set(run.runId, outcome);
      finished.push(outcome);
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, runs.length) }, lane));
  done = true;
  return {
    group,
    status: cancelled ? 'cancelled' : 'completed',
    runs: runs.map((r) => outcomes.get(r.runId)!),
  };
}
