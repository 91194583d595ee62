/**
 * `trainingRun`: one OPERA training run as a durable workflow.
 *
 *   prepareDataset → coldStartSft → evaluate(0) → for i in 1..N: rollout×shards → score×shards → reward
 *   → update (→ evaluate every k) → evaluate(N)
 *
 * Deterministic code only: every effect (database, engine, files) is an activity. State that decides
 * future results (checkpoint, optimizer, EMA baseline, data position) lives in `RunState`, which is what
 * continue-as-new carries. A stage that fails for good does not fail the run: the run is `blocked` until
 * an operator sends `retryStage` (after fixing the cause) or `cancel`.
 */
import {
  ApplicationFailure,
  CancellationScope,
  ContinueAsNew,
  condition,
  continueAsNew,
  isCancellation,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { RunState } from '../activities/types';
import {
  TASK_QUEUES,
  cancelSignal,
  pauseSignal,
  progressQuery,
  resumeSignal,
  retryStageUpdate,
  type BlockedStage,
  type RunProgress,
  type TrainingRunInput,
  type TrainingRunResult,
} from './api';

export * from './api';

type Activities = ReturnType<typeof createActivities>;

/** Quick database writes (status, events); the sweep's too. */
export const SHORT = {
  startToCloseTimeout: '30 seconds',
  // Unlimited: a database outage is waited out (with backoff), it does not fail the run.
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds' },
} as const;

/** Compute stages: long, heartbeating (a dead worker is noticed after `heartbeatTimeout`). */
const LONG = {
  startToCloseTimeout: '4 hours',
  heartbeatTimeout: '10 seconds',
  // A lost worker's stage restarts within a second or two; a database outage is retried every 10 s at most.
  retry: { initialInterval: '1 second', backoffCoefficient: 1.5, maximumInterval: '10 seconds' },
} as const;

class RunCancelled extends Error {}

function errorMessage(err: unknown): string {
  // ActivityFailure wraps the activity's own error: report that, not "Activity task failed".
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error && e.message.startsWith('Activity task')) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

export async function trainingRun(input: TrainingRunInput): Promise<TrainingRunResult> {
  const { runId, plan } = input;
  if (plan.iterations < 0 || plan.rolloutShards < 1 || plan.continueAsNewEvery < 1) {
    throw ApplicationFailure.nonRetryable(`invalid run plan ${JSON.stringify(plan)}`, 'InvalidPlan');
  }
  // Unlimited at this level: a lost worker or database costs a retry, never the run. The activity counts the
  // stage's own errors and fails non-retryably after runtime.maxStageAttempts of them (activities/runtime.ts).
  const retry = LONG.retry;
  const heartbeatTimeout = plan.heartbeatTimeoutMs ?? LONG.heartbeatTimeout;
  const queues = plan.taskQueues ?? TASK_QUEUES;
  const db = proxyActivities<Activities>({ ...SHORT, taskQueue: queues.train });
  const rolloutActs = proxyActivities<Activities>({ ...LONG, heartbeatTimeout, retry, taskQueue: queues.rollout });
  const trainActs = proxyActivities<Activities>({ ...LONG, heartbeatTimeout, retry, taskQueue: queues.train });

  let state: RunState | undefined = input.state;
  let paused = false;
  let cancelRequested = false;
  let retryGeneration = 0;
  let retriedBy = 'operator';
  const blocked: BlockedStage[] = [];
  const running = new Set<CancellationScope>();
  const progress: RunProgress = {
    runId,
    status: 'running',
    stage: 'starting',
    iteration: state?.iteration ?? 0,
    iterations: plan.iterations,
    shardsDone: 0,
    shards: 0,
    blocked,
    ema: state?.ema ?? null,
    evalBefore: state?.evalBefore ?? null,
    evalLatest: state?.evalLatest ?? null,
    continuedAsNew: workflowInfo().continuedFromExecutionRunId ? 1 : 0,
  };

  setHandler(pauseSignal, () => {
    paused = true;
  });
  setHandler(resumeSignal, () => {
    paused = false;
  });
  setHandler(cancelSignal, () => {
    cancelRequested = true;
    for (const scope of running) scope.cancel();
  });
  setHandler(
    retryStageUpdate,
    (request: { by: string }) => {
      retryGeneration++;
      retriedBy = request.by;
      return { retried: [...blocked] };
    },
    {
      validator: (_request: { by: string }) => {
        if (blocked.length === 0) throw new Error(`run ${runId} is ${statusNow()}, not blocked: nothing to retry`);
      },
    },
  );
  setHandler(progressQuery, () => ({ ...progress, blocked: [...blocked], status: statusNow() }));

  function statusNow(): RunProgress['status'] {
    if (progress.status === 'completed' || progress.status === 'cancelled') return progress.status;
    if (cancelRequested) return 'cancelling';
    if (blocked.length > 0) return 'blocked';
    if (paused) return 'paused';
    return 'running';
  }

  async function checkpointGate(): Promise<void> {
    if (cancelRequested) throw new RunCancelled();
    if (!paused) return;
    await db.setRunStatus(runId, { status: 'paused' });
    await condition(() => !paused || cancelRequested);
    if (cancelRequested) throw new RunCancelled();
    await db.setRunStatus(runId, { status: 'running' });
  }

  /**
   * Runs one stage: Temporal retries it as long as it fails retryably (lost workers, an unreachable
   * database, errors of the stage below runtime.maxStageAttempts); a non-retryable failure blocks the run
   * until `retryStage` or `cancel`.
   */
  async function stage<T>(name: string, iteration: number, shard: number, run: () => Promise<T>): Promise<T> {
    for (;;) {
      await checkpointGate();
      const scope = new CancellationScope();
      running.add(scope);
      try {
        return await scope.run(run);
      } catch (err) {
        if (cancelRequested && isCancellation(err)) throw new RunCancelled();
        if (isCancellation(err)) throw err;
        const entry: BlockedStage = { stage: name, iteration, shard, error: errorMessage(err) };
        blocked.push(entry);
        const generation = retryGeneration;
        await db.setRunStatus(runId, {
          status: 'blocked',
          error: `${name} (iteration ${iteration}, shard ${shard}): ${entry.error}`,
        });
        await db.appendEvent(runId, 'blocked', 'workflow', { ...entry });
        await condition(() => retryGeneration !== generation || cancelRequested);
        blocked.splice(blocked.indexOf(entry), 1);
        if (cancelRequested) throw new RunCancelled();
        // Recorded before the stage runs again: its attempts are counted afresh from this event.
        await db.appendEvent(runId, 'retried', retriedBy, { ...entry });
        if (blocked.length === 0) await db.setRunStatus(runId, { status: paused ? 'paused' : 'running', error: null });
      } finally {
        running.delete(scope);
      }
    }
  }

  async function shards<T>(name: string, iteration: number, run: (shard: number) => Promise<T>): Promise<T[]> {
    progress.stage = name;
    progress.shards = plan.rolloutShards;
    progress.shardsDone = 0;
    return Promise.all(
      Array.from({ length: plan.rolloutShards }, (_, s) =>
        stage(name, iteration, s, () => run(s)).then((out) => {
          progress.shardsDone++;
          return out;
        }),
      ),
    );
  }

  async function single<T>(name: string, iteration: number, run: () => Promise<T>): Promise<T> {
    progress.stage = name;
    progress.shards = 1;
    progress.shardsDone = 0;
    const out = await stage(name, iteration, 0, run);
    progress.shardsDone = 1;
    return out;
  }

  try {
    if (input.cancel) throw new RunCancelled();
    if (input.resume) {
      // Recorded first: the stages' attempts are counted afresh from this event.
      await db.appendEvent(runId, 'resumed', input.by ?? 'operator', { previousIteration: null });
      state = (await db.recordedRunState(runId)) ?? undefined;
    }
    await db.setRunStatus(runId, {
      status: 'running',
      started: true,
      finished: false,
      error: null,
      currentIteration: state?.iteration ?? 0,
    });

    if (!state) {
      const dataset = await single('prepareDataset', 0, () => trainActs.prepareDataset({ runId, iteration: 0 }));
      const sft = await single('coldStartSft', 0, () => trainActs.coldStartSft({ runId, iteration: 0, dataset }));
      const evalBefore = await single('evaluate', 0, () =>
        trainActs.evaluate({ runId, iteration: 0, dataset, checkpoint: sft.checkpoint }),
      );
      state = {
        iteration: 0,
        dataset,
        reference: sft.checkpoint,
        checkpoint: sft.checkpoint,
        optimizer: null,
        ema: null,
        dataPosition: 0,
        evalBefore,
        evalLatest: evalBefore,
      };
      progress.evalBefore = progress.evalLatest = evalBefore;
    }

    /** Whether iteration i ends with an evaluation (the final one is run after the loop). */
    const evalDue = (i: number) => plan.evalEvery > 0 && i % plan.evalEvery === 0 && i < plan.iterations;
    const evaluateAt = async (s: RunState): Promise<RunState> => {
      const result = await single('evaluate', s.iteration, () =>
        trainActs.evaluate({ runId, iteration: s.iteration, dataset: s.dataset, checkpoint: s.checkpoint }),
      );
      progress.evalLatest = result;
      return { ...s, evalLatest: result };
    };
    // A run stopped between an iteration's update and its evaluation resumes from that update: evaluate it
    // first, or the resumed run would lack an evaluation the uninterrupted run has.
    if (input.resume && evalDue(state.iteration) && state.evalLatest?.iteration !== state.iteration)
      state = await evaluateAt(state);

    let sinceContinue = 0;
    while (state.iteration < plan.iterations) {
      const s: RunState = state;
      const i = s.iteration + 1;
      progress.iteration = i;
      const rollouts = await shards('rollout', i, (shard) =>
        rolloutActs.rollout({
          runId,
          iteration: i,
          shard,
          shards: plan.rolloutShards,
          dataset: s.dataset,
          checkpoint: s.checkpoint,
          dataPosition: s.dataPosition,
        }),
      );
      const scores = await shards('score', i, (shard) =>
        rolloutActs.score({ runId, iteration: i, shard, checkpoint: s.checkpoint, rollout: rollouts[shard]! }),
      );
      const rewards = await single('reward', i, () => trainActs.reward({ runId, iteration: i, scores, ema: s.ema }));
      const update = await single('update', i, () =>
        trainActs.update({
          runId,
          iteration: i,
          checkpoint: s.checkpoint,
          reference: s.reference,
          rewards,
          ema: rewards.ema,
          dataPosition: s.dataPosition + rollouts.reduce((n, r) => n + r.prompts, 0),
        }),
      );
      state = {
        ...s,
        iteration: i,
        checkpoint: update.checkpoint,
        optimizer: update.optimizer,
        ema: update.ema,
        dataPosition: update.dataPosition,
      };
      progress.ema = state.ema;
      await db.setRunStatus(runId, { status: 'running', currentIteration: i });

      if (evalDue(i)) state = await evaluateAt(state);

      sinceContinue++;
      if (
        state.iteration < plan.iterations &&
        (sinceContinue >= plan.continueAsNewEvery || workflowInfo().continueAsNewSuggested)
      ) {
        await checkpointGate();
        await continueAsNew<typeof trainingRun>({ runId, plan, state });
      }
    }

    const finalState: RunState = state;
    let evalAfter = finalState.evalLatest;
    if (plan.iterations > 0 && evalAfter?.iteration !== plan.iterations) {
      evalAfter = await single('evaluate', plan.iterations, () =>
        trainActs.evaluate({
          runId,
          iteration: plan.iterations,
          dataset: finalState.dataset,
          checkpoint: finalState.checkpoint,
        }),
      );
      progress.evalLatest = evalAfter;
    }
    const result: TrainingRunResult = {
      runId,
      status: 'completed',
      iterations: finalState.iteration,
      ema: finalState.ema,
      evalBefore: finalState.evalBefore,
      evalAfter,
      checkpoint: finalState.checkpoint,
    };
    progress.stage = 'done';
    await db.setRunStatus(runId, {
      status: 'completed',
      error: null,
      currentIteration: finalState.iteration,
      finished: true,
      summary: {
        evalBefore: result.evalBefore,
        evalAfter: result.evalAfter,
        ema: result.ema,
        checkpoint: result.checkpoint,
      },
    });
    progress.status = 'completed';
    return result;
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    if (err instanceof RunCancelled || isCancellation(err)) {
      await CancellationScope.nonCancellable(async () => {
        // A run cancelled before this execution knew its state keeps the iteration it recorded.
        await db.setRunStatus(runId, {
          status: 'cancelled',
          finished: true,
          ...(state ? { currentIteration: state.iteration } : {}),
        });
        await db.appendEvent(runId, 'cancelled', 'workflow', { iteration: state?.iteration ?? null });
      });
      progress.status = 'cancelled';
      return {
        runId,
        status: 'cancelled',
        iterations: state?.iteration ?? 0,
        ema: state?.ema ?? null,
        evalBefore: state?.evalBefore ?? null,
        evalAfter: null,
        checkpoint: state?.checkpoint ?? null,
      };
    }
    await CancellationScope.nonCancellable(() =>
      db.setRunStatus(runId, {
        status: 'failed',
        error: errorMessage(err),
        finished: true,
        ...(state ? { currentIteration: state.iteration } : {}),
      }),
    );
    throw err;
  }
}
