/**
 * The activities of `trainingRun`, from one factory so their dependencies (database, worker identity)
 * are explicit. Each stage file is a thin adapter: load its inputs (config from the runs row, tensors and
 * rollouts from the artifact store) → call opera/ or engine/ → persist outputs (artifact store + rows).
 * What they share (the idempotent stage wrapper, heartbeats, partial logs and checkpoints) is runtime.ts.
 *
 * Idempotent per (run, stage, iteration, shard): an activity whose stage already completed returns the
 * recorded output; every write is an upsert. Randomness is keyed by (seed, iteration, prompt, sample,
 * token), so a retried stage produces what the first attempt would have.
 */
import { appendEvent, recordedRunState, setRunStatus, type RunStatusUpdate } from '../db/queries';
import { datasetActivities } from './dataset';
import { evaluateActivities } from './evaluate';
import { rewardActivities } from './reward';
import { rolloutActivities } from './rollout';
import { createRuntime, type ActivityDeps } from './runtime';
import { sftActivities } from './sft';
import type { RunState } from './types';
import { updateActivities } from './update';

export type { ActivityDeps } from './runtime';

export function createActivities(deps: ActivityDeps) {
  const rt = createRuntime(deps);
  const { db } = deps;
  return {
    // Short database activities of the workflow (status, events, the state of a resumed run).
    async setRunStatus(runId: string, update: RunStatusUpdate): Promise<void> {
      await setRunStatus(db, runId, update);
    },
    async appendEvent(runId: string, type: string, actor: string, detail?: Record<string, unknown>): Promise<void> {
      await appendEvent(db, runId, type, actor, detail);
    },
    /** null (not undefined) when nothing is recorded: Temporal payloads cannot carry undefined. */
    async recordedRunState(runId: string): Promise<RunState | null> {
      return (await recordedRunState(db, runId)) ?? null;
    },
    ...datasetActivities(rt),
    ...sftActivities(rt),
    ...rolloutActivities(rt),
    ...rewardActivities(rt),
    ...updateActivities(rt),
    ...evaluateActivities(rt),
  };
}
