/** How a run config becomes a workflow's plan: scheduling knobs, task queue names and the heartbeat timeout from the environment. */
import { envNumber } from '../../util/env';
import { TASK_QUEUES, type RunPlan } from '../../workflows/trainingRun';
import type { RunConfig } from '../../config/load';

/** Task queue names, with OPERAFLOW_QUEUE_PREFIX applied (deployments sharing a Temporal server stay apart). */
export function taskQueues(): { rollout: string; train: string } {
  const prefix = process.env.OPERAFLOW_QUEUE_PREFIX ?? '';
  return { rollout: `${prefix}${TASK_QUEUES.rollout}`, train: `${prefix}${TASK_QUEUES.train}` };
}

export function planOf(config: RunConfig): RunPlan {
  const hb = envNumber('OPERAFLOW_HEARTBEAT_TIMEOUT');
  const queues = taskQueues();
  return {
    ...(queues.train !== TASK_QUEUES.train ? { taskQueues: queues } : {}),
    iterations: config.grpo.iterations,
    rolloutShards: config.runtime.rolloutShards,
    continueAsNewEvery: config.runtime.continueAsNewEvery,
    evalEvery: config.eval.every,
    ...(hb !== undefined ? { heartbeatTimeoutMs: hb * 1000 } : {}),
  };
}
