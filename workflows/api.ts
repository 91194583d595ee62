/**
 * The interface of workflow `trainingRun` for its callers (CLI, tests): task queues, input and result,
 * and the signals, update and query an operator uses. Importable by workflow code and clients alike.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { CheckpointRef, EvalResult, RunState } from '../activities/types';

export const TASK_QUEUES = { rollout: 'rollout', train: 'train' } as const;
export const WORKFLOW_TYPE = 'trainingRun';

/** Scheduling knobs from the run config (the activities read the rest from the runs row). */
export interface RunPlan {
  iterations: number;
  rolloutShards: number;
  continueAsNewEvery: number;
  evalEvery: number;
  /** Overrides the compute stages' heartbeat timeout (tests shorten it so a killed worker is noticed quickly). */
  heartbeatTimeoutMs?: number;
  /** Task queue names when not the defaults (isolated deployments and test runs sharing one server). */
  taskQueues?: { rollout: string; train: string };
}

export type { RunState };

export interface TrainingRunInput {
  runId: string;
  plan: RunPlan;
  state?: RunState;
  /** A run whose workflow closed (failed, cancelled, terminated): continue from the state its recorded stages give. */
  resume?: boolean;
  /** A run whose workflow is gone, cancelled by an operator: record it as cancelled, and do nothing else. */
  cancel?: boolean;
  /** Who asked for `resume` (recorded in the run's events). */
  by?: string;
}

export interface TrainingRunResult {
  runId: string;
  status: 'completed' | 'cancelled';
  iterations: number;
  ema: number | null;
  evalBefore: EvalResult | null;
  evalAfter: EvalResult | null;
  checkpoint: CheckpointRef | null;
}

export interface BlockedStage {
  stage: string;
  iteration: number;
  shard: number;
  error: string;
}

export interface RunProgress {
  runId: string;
  status: 'running' | 'paused' | 'blocked' | 'cancelling' | 'completed' | 'cancelled';
  stage: string;
  iteration: number;
  iterations: number;
  shardsDone: number;
  shards: number;
  blocked: BlockedStage[];
  ema: number | null;
  evalBefore: EvalResult | null;
  evalLatest: EvalResult | null;
  continuedAsNew: number;
}

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const cancelSignal = defineSignal<[{ reason?: string }?]>('cancel');
/** Retry the stages the run is blocked on; refused (by its validator) when nothing is blocked. */
export const retryStageUpdate = defineUpdate<{ retried: BlockedStage[] }, [{ by: string }]>('retryStage');
export const progressQuery = defineQuery<RunProgress>('progress');
