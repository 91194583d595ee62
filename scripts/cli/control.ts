/**
 * `operaflow pause|resume|cancel|retry <run>`: operator commands. Only the workflow writes a run's
 * status: a live run gets a signal (pause, resume, cancel) or an update (retry, whose validator refuses
 * a run that is not blocked); a run whose workflow closed is resumed or cancelled by starting its
 * workflow again with `resume` / `cancel`. Every command is recorded as an event, with who sent it.
 */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { TERMINAL_STATUSES, appendEvent, recordedRunState, requireRun } from '../../db/queries';
import { runConfigSchema } from '../../config/load';
import { cancelSignal, pauseSignal, resumeSignal, retryStageUpdate } from '../../workflows/trainingRun';
import { actor, connect, workflowRunning, type Services } from './connect';
import { planOf } from './plan';
import { startWorkflow } from './train';

export type ControlCommand = 'pause' | 'resume' | 'cancel' | 'retry';

/** A workflow records its terminal status just before it closes: give it a moment to finish closing. */
async function liveWorkflow(s: Services, runId: string, status: string): Promise<boolean> {
  let live = await workflowRunning(s, runId);
  for (let i = 0; live && (TERMINAL_STATUSES as readonly string[]).includes(status) && i < 40; i++) {
    await new Promise((r) => setTimeout(r, 250));
    live = await workflowRunning(s, runId);
  }
  return live;
}

/** An update needs a worker to run its validator; without one, say which queue has none instead of hanging. */
async function retry(s: Services, runId: string, by: string): Promise<string> {
  const handle = s.client.workflow.getHandle(runId);
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(
      () =>
        reject(
          new Error(`no worker answered within 60 s: is a worker polling the run's train queue? (operaflow worker)`),
        ),
      60_000,
    ).unref(),
  );
  try {
    const { retried } = await Promise.race([handle.executeUpdate(retryStageUpdate, { args: [{ by }] }), timeout]);
    return retried.map((b) => `${b.stage} (iteration ${b.iteration}, shard ${b.shard})`).join(', ');
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) throw new Error(err.cause?.message ?? err.message);
    throw err;
  }
}

/**
 * Sends `command` to run `runId` on behalf of `who`, and records it; returns what was done, in a line.
 * Shared by the CLI and the dashboard's action buttons (`operaflow ui --allow-actions`).
 */
export async function controlRun(s: Services, command: ControlCommand, runId: string, who: string): Promise<string> {
  const run = await requireRun(s.db.db, runId);
  const live = await liveWorkflow(s, runId, run.status);
  if (!live) {
    const config = runConfigSchema.parse(run.config);
    if (command === 'resume') {
      if (run.status === 'completed') throw new Error(`run ${runId} has completed; nothing to resume`);
      // The workflow rebuilds its state with the same function; read here only to say where it continues.
      const from = (await recordedRunState(s.db.db, runId))?.iteration;
      // The workflow records the `resumed` event (with `by`) before its first stage.
      await startWorkflow(s, runId, { runId, plan: planOf(config), resume: true, by: who }, true);
      return `resumed run ${runId} from ${from === undefined ? 'the start' : `iteration ${from}`}`;
    }
    if (command === 'cancel' && !(TERMINAL_STATUSES as readonly string[]).includes(run.status)) {
      await (await startWorkflow(s, runId, { runId, plan: planOf(config), cancel: true }, true)).result();
      await appendEvent(s.db.db, runId, 'cancelled', who, { note: 'no live workflow' });
      return `cancelled run ${runId}`;
    }
    throw new Error(
      `run ${runId} is ${run.status} and its workflow is not running${command === 'retry' ? ` (use: operaflow resume ${runId})` : ''}`,
    );
  }
  const handle = s.client.workflow.getHandle(runId);
  // The workflow records a `retried` event (with `by`) for each stage it releases.
  if (command === 'retry') return `retry sent to run ${runId}: ${await retry(s, runId, who)}`;
  if (command === 'cancel') await handle.signal(cancelSignal, { reason: `by ${who}` });
  else await handle.signal(command === 'pause' ? pauseSignal : resumeSignal);
  const type = { pause: 'paused', resume: 'resumed', cancel: 'cancelled' }[command];
  await appendEvent(s.db.db, runId, type, who, { previousStatus: run.status });
  return `${command} sent to run ${runId}`;
}

export async function control(command: ControlCommand, runId: string): Promise<number> {
  const s = await connect();
  try {
    console.log(await controlRun(s, command, runId, actor()));
    return 0;
  } finally {
    await s.close();
  }
}
