/**
 * `train --wait`: follows a run until its workflow closes or it blocks (an operator must act), with
 * progress bars on a terminal and a line per change otherwise. Progress comes from the database, which
 * workers update, and from the heartbeats of the running activities, which the Temporal server holds.
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import cliProgress from 'cli-progress';
import { FROZEN_CONFIG_HINT } from '../../activities/runtime';
import { latestStageProgress, requireRun } from '../../db/queries';
import type { RunConfig } from '../../config/load';
import type { Services } from './connect';
import { taskQueues } from './plan';

/** Seconds without visible progress before `--wait` checks that workers poll the run's task queues. */
const QUIET_BEFORE_QUEUE_CHECK_S = 5;

/**
 * The run's task queues that no worker polls: the workflow's own (`train`, workflow tasks) and the two
 * its stages go to (activity tasks). A run whose queue has no worker would otherwise wait silently.
 */
async function queuesWithoutWorkers(s: Services): Promise<string[]> {
  const { rollout, train } = taskQueues();
  // temporal.api.enums.v1.TaskQueueType: TASK_QUEUE_TYPE_WORKFLOW = 1, TASK_QUEUE_TYPE_ACTIVITY = 2.
  const [WORKFLOW, ACTIVITY] = [1, 2];
  const checks: [string, number, string][] = [
    [train, WORKFLOW, 'workflow'],
    [train, ACTIVITY, 'training stages'],
    [rollout, ACTIVITY, 'rollout and scoring stages'],
  ];
  const idle: string[] = [];
  for (const [name, taskQueueType, what] of checks) {
    const res = await s.client.workflowService.describeTaskQueue({
      namespace: s.client.options.namespace,
      taskQueue: { name },
      taskQueueType,
    });
    if ((res.pollers ?? []).length === 0) idle.push(`"${name}" (${what})`);
  }
  return idle;
}

/** Items a compute activity heartbeats through (its `step` or `item` count), for the stage progress bar. */
function stageItems(config: RunConfig, activity: string): number | undefined {
  const perShard = Math.ceil(config.grpo.promptsPerIteration / config.runtime.rolloutShards);
  switch (activity) {
    case 'coldStartSft':
      return config.coldStart.steps;
    case 'rollout':
    case 'score':
      return perShard;
    case 'update':
      return (
        config.grpo.epochs *
        Math.ceil((config.grpo.promptsPerIteration * config.grpo.groupSize) / config.grpo.miniBatchSize)
      );
    case 'evaluate':
      return config.eval.prompts;
    default:
      return undefined;
  }
}

type PendingActivity = {
  activityType?: { name?: string | null } | null;
  heartbeatDetails?: { payloads?: unknown[] | null } | null;
};

/** The most advanced heartbeat among the workflow's running activities: which stage, how far. */
function liveProgress(pending: PendingActivity[]): { activity: string; done: number } | undefined {
  let best: { activity: string; done: number } | undefined;
  for (const p of pending) {
    const payload = p.heartbeatDetails?.payloads?.[0];
    if (!payload) continue;
    let details: { step?: number; item?: number; done?: number } | undefined;
    try {
      details = defaultPayloadConverter.fromPayload(
        payload as Parameters<typeof defaultPayloadConverter.fromPayload>[0],
      );
    } catch {
      continue;
    }
    const done = details?.item ?? details?.step ?? details?.done;
    if (typeof done === 'number' && (!best || done > best.done)) best = { activity: p.activityType?.name ?? '?', done };
  }
  return best;
}

/** Returns the run's final status, or 'blocked'. */
export async function waitForRun(s: Services, runId: string, config: RunConfig, json: boolean): Promise<string> {
  const iterations = config.grpo.iterations;
  const out = (line: string) => (json ? console.error(line) : console.log(line));
  const tty = Boolean(process.stderr.isTTY);
  const bars = tty
    ? new cliProgress.MultiBar(
        { format: ' {bar} {value}/{total} {label}', hideCursor: true, clearOnComplete: false, stream: process.stderr },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const iterBar = bars?.create(Math.max(iterations, 1), 0, { label: 'iterations' });
  const stageBar = bars?.create(1, 0, { label: 'starting' });
  let lastLine = '';
  let lastChange = Date.now();
  let nextQueueCheck = 0;
  let lastQueueWarning = '';
  const handle = s.client.workflow.getHandle(runId);
  try {
    for (;;) {
      const run = await requireRun(s.db.db, runId);
      const cur = await latestStageProgress(s.db.db, runId);
      const label = cur ? `${cur.stage} (iteration ${cur.iteration})` : 'waiting for a worker';
      iterBar?.update(run.currentIteration, { label: `iterations · ${run.status}` });
      if (cur) {
        stageBar?.setTotal(Math.max(cur.shards, 1));
        stageBar?.update(cur.done, { label });
      }
      const line = `[${run.status}] iteration ${run.currentIteration}/${iterations} · ${label}${cur && cur.shards > 1 ? ` ${cur.done}/${cur.shards} shards` : ''}`;
      if (line !== lastLine) {
        if (!tty) console.error(line);
        lastLine = line;
        lastChange = Date.now();
      }
      // Nothing moved for a while: say so if it is because no worker serves the run's queues.
      const quietS = (Date.now() - lastChange) / 1000;
      if (quietS >= QUIET_BEFORE_QUEUE_CHECK_S && Date.now() >= nextQueueCheck) {
        nextQueueCheck = Date.now() + 30_000;
        const idle = await queuesWithoutWorkers(s).catch(() => []);
        const warning = idle.length
          ? `no worker polls task queue ${idle.join(', ')}: the run waits until one does (start \`operaflow worker\` with the same OPERAFLOW_QUEUE_PREFIX${process.env.OPERAFLOW_QUEUE_PREFIX ? ` "${process.env.OPERAFLOW_QUEUE_PREFIX}"` : ''} and TEMPORAL_ADDRESS)`
          : '';
        if (warning && warning !== lastQueueWarning) bars ? bars.log(`${warning}\n`) : console.error(warning);
        lastQueueWarning = warning;
      }
      if (run.status === 'blocked') {
        bars?.stop();
        const inConfig = run.error?.includes(FROZEN_CONFIG_HINT) ?? false;
        out(
          `run ${runId} is blocked: ${run.error ?? 'unknown error'}\n${
            inConfig
              ? `next: operaflow cancel ${runId}, fix the config, then operaflow train <fixed config>`
              : `fix the cause, then: operaflow retry ${runId}   (or: operaflow cancel ${runId})`
          }`,
        );
        return 'blocked';
      }
      let closed = false;
      try {
        const d = await handle.describe();
        closed = d.status.name !== 'RUNNING';
        // Within a long stage: the heartbeat of its activity (SFT step, prompts sampled or scored, update step).
        const live = liveProgress(d.raw.pendingActivities ?? []);
        const total = live && stageItems(config, live.activity);
        if (stageBar && live && total) {
          stageBar.setTotal(total);
          stageBar.update(Math.min(live.done, total), { label: `${label} · ${live.activity} ${live.done}/${total}` });
        }
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
        closed = true;
      }
      if (closed) {
        const final = await requireRun(s.db.db, runId);
        iterBar?.update(final.currentIteration, { label: `iterations · ${final.status}` });
        bars?.stop();
        if (final.status !== 'completed')
          out(`run ${runId} ended ${final.status}${final.error ? `: ${final.error}` : ''}`);
        return final.status;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    bars?.stop();
  }
}
