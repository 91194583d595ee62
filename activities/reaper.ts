/**
 * Releasing what dead workers of this machine held. A SIGKILLed worker reports nothing, so Temporal
 * would hand its activity to another worker only after the heartbeat timeout (10 s). Every worker looks,
 * every second, at the attempts recorded `running` under another process of its own host:
 * when that process no longer exists and the server has had no heartbeat from it for a few seconds, the
 * attempt's task token is failed (retryable: Temporal starts the next attempt at once, with the last
 * heartbeat's details to resume from) and the attempt is recorded `lost`. Workers on other machines
 * cannot be checked this way (their pids mean nothing here); the heartbeat timeout covers them.
 */
import type { Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Db } from '../db/client';
import { finishStageAttempt, runningAttemptsOnHost } from '../db/queries';

/** A heartbeat more recent than this means the attempt is alive, whatever its pid says (another pid namespace). */
const HEARTBEAT_STALE_MS = 4000;

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** Whether the server saw a heartbeat from `worker` for this workflow within HEARTBEAT_STALE_MS. */
async function recentlyHeartbeating(client: Client, workflowId: string, worker: string): Promise<boolean> {
  const described = await client.workflow.getHandle(workflowId).describe();
  return (described.raw.pendingActivities ?? []).some((a) => {
    if (a.lastWorkerIdentity !== worker) return false;
    const seconds = Number(a.lastHeartbeatTime?.seconds ?? 0);
    return Date.now() - seconds * 1000 < HEARTBEAT_STALE_MS;
  });
}

/** Releases the attempts of dead workers on `host`; returns how many. */
export async function releaseDeadWorkers(
  db: Db,
  client: Client,
  self: { host: string; identity: string; log?: (line: string) => void },
): Promise<number> {
  let released = 0;
  for (const attempt of await runningAttemptsOnHost(db, self.host)) {
    const pid = Number(attempt.worker?.slice(self.host.length + 1));
    if (!Number.isInteger(pid) || pid <= 0 || attempt.worker === self.identity || processExists(pid)) continue;
    if (await recentlyHeartbeating(client, attempt.runId, attempt.worker!).catch(() => true)) continue;
    const why = `worker ${attempt.worker} died (process gone); released by ${self.identity}`;
    // The token names this attempt only: if Temporal already moved on (timeout, a newer attempt), this fails harmlessly.
    await client.activity
      .fail(Buffer.from(attempt.taskToken!, 'base64'), ApplicationFailure.retryable(why, 'WorkerLost'))
      .catch(() => undefined);
    await finishStageAttempt(db, attempt.id, { status: 'lost', error: why });
    self.log?.(`${attempt.runId} ${attempt.stage} iteration ${attempt.iteration} shard ${attempt.shard}: ${why}`);
    released += 1;
  }
  return released;
}
