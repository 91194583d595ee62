/**
 * What every stage activity shares: the idempotent `stage` wrapper (a completed stage returns its
 * recorded output; an attempt is recorded with worker, timing, output or error), heartbeats, the
 * per-attempt partial logs of sharded stages, and partial checkpoints of training stages. Stage files
 * (dataset.ts, sft.ts, rollout.ts, reward.ts, update.ts, evaluate.ts) say what a stage does with these.
 */
import { isAbsolute, join, relative, resolve } from 'node:path';
import { runIdProblem } from '../config/run-id';
import { ApplicationFailure, CancelledFailure, Context, activityInfo } from '@temporalio/activity';
import { runConfigSchema, type RunConfig } from '../config/schema';
import type { Db } from '../db/client';
import {
  completedStageOutput,
  failedAttemptsSinceRetry,
  finishStageAttempt,
  lastAttemptProgress,
  recordAttemptProgress,
  recordAttemptProviders,
  requireRun,
  startStageAttempt,
  type StageKey,
} from '../db/queries';
import { loadCheckpoint, type Checkpoint } from '../engine/checkpoint';
import type { LlamaConfig } from '../engine/config';
import type { DatasetRow } from '../opera/dataset';
import { cachedPromise } from '../util/cache';
import { pathsOutsideRoots, workerRoots } from './confine';
import { fileHashes, resolveBaseDir, saveCheckpointPublished, verifyCheckpointFiles } from './engine';
import { PartialLog, fetchCheckpointDir, getJson, storeAt, type ArtifactStore } from './store';
import { StoreError } from './store-s3';
import { causeChain } from '../util/errors';
import { inPhase } from '../util/phase';
import type { DatasetRef } from './types';

export interface ActivityDeps {
  db: Db;
  /** Who ran an attempt (stage_attempts.worker): host:pid by default. */
  worker: string;
  log?: (line: string) => void;
}

/** What the dataset artifact holds. */
export interface DatasetFile {
  hash: string;
  train: DatasetRow[];
  eval: DatasetRow[];
}

/** Heartbeat details of a training stage: its step, and the last partial checkpoint with its file hashes. */
export interface PartialProgress {
  step: number;
  partialStep?: number;
  partialFiles?: Record<string, string>;
}

/** Errors that retrying cannot fix: bad input data, a diverged (NaN) loss. */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

/** What an operator is told when a stage fails because of a setting in the run's (frozen) config. */
export const FROZEN_CONFIG_HINT =
  "the run's config was frozen when the run was recorded, so `operaflow retry` runs it again unchanged: cancel the run and `operaflow train` the fixed config as a new run";

/** A permanent failure whose cause is a setting of the run's config (`keys`), which a retry cannot change. */
export class ConfigError extends PermanentError {
  override name = 'ConfigError';
  constructor(
    message: string,
    readonly keys: string[],
  ) {
    super(`${message} [set by ${keys.join(', ')}; ${FROZEN_CONFIG_HINT}]`);
  }
}

/** A readable message: drizzle's "Failed query: <sql> params: <every value>" is reduced to the server's reason. */
function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.message.startsWith('Failed query:') && err.cause instanceof Error)
    return `database write failed: ${err.cause.message}`;
  return err.message;
}

/** Error codes of a database that cannot be reached (network, server shutting down or starting). */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
]);

/** The code when `err` (or an error it wraps) says PostgreSQL is unreachable. */
export function unreachableCode(err: unknown): string | undefined {
  for (const e of causeChain(err)) {
    if (typeof e.code === 'string' && UNREACHABLE.has(e.code)) return e.code;
    if (
      typeof e.message === 'string' &&
      /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
        e.message,
      )
    )
      return 'connection lost';
  }
  return undefined;
}

/** Where the database is, for messages (never its password). */
function databaseHost(): string {
  try {
    const u = new URL(process.env.DATABASE_URL ?? '');
    return `${u.hostname}:${u.port || 5432}`;
  } catch {
    return '(DATABASE_URL)';
  }
}

/** Whether a stage that failed `failures` times through its own errors (since the last operator retry) must stop. */
export const attemptsExhausted = (config: RunConfig, failures: number): boolean =>
  failures >= config.runtime.maxStageAttempts;

export const pad = (n: number): string => String(n).padStart(4, '0');
export const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

/**
 * OPERAFLOW_PROVIDERS (`cuda,cpu`): the execution providers this worker runs every stage on, in place of
 * the run's `runtime.providers`; so GPU workers and CPU workers can serve one run (each attempt records
 * which it used). Unset: the run's setting.
 */
export function workerProviders(): string[] | undefined {
  const value = process.env.OPERAFLOW_PROVIDERS;
  return value === undefined ? undefined : value.split(',').map((p) => p.trim());
}

/** The run's artifact store (`runtime.artifacts`). */
export const storeOf = (config: RunConfig): ArtifactStore => storeAt(config.runtime.artifacts);

/** Where a run's files are written on this worker: `<runtime.artifacts>/<run>` or its cache mirror (store.ts). */
export function runDirOf(config: RunConfig, runId: string): string {
  // A run id is checked by `train`, but a workflow can be started by anyone who reaches Temporal.
  const problem = runIdProblem(runId);
  if (problem) throw new PermanentError(`run id ${JSON.stringify(runId.slice(0, 60))} ${problem}`);
  const root = storeOf(config).localRoot;
  const dir = resolve(root, runId);
  if (relative(root, dir).startsWith('..') || isAbsolute(relative(root, dir)))
    throw new PermanentError(`run id ${runId} resolves outside runtime.artifacts`);
  return dir;
}

export type Runtime = ReturnType<typeof createRuntime>;

export function createRuntime(deps: ActivityDeps) {
  const { db, worker } = deps;
  const configs = new Map<string, Promise<RunConfig>>();
  const datasets = new Map<string, Promise<DatasetFile>>();
  /** The latest details per running activity, re-sent by the keep-alive in `stage`. */
  const lastDetails = new WeakMap<Context, unknown>();
  /** The attempt each running activity records, for progress and for resuming a retried stage. */
  const attempts = new WeakMap<Context, { id: number; attempt: number; key: StageKey }>();

  /** Records resume information on the attempt's row too: an operator's retry is a new activity with no heartbeat to go on. */
  async function recordProgress(progress: object): Promise<void> {
    const current = attempts.get(Context.current());
    if (current) await recordAttemptProgress(db, current.id, progress as Record<string, unknown>);
  }

  /**
   * The execution providers this attempt's models run on (the worker's OPERAFLOW_PROVIDERS, else the
   * run's runtime.providers), recorded on the attempt: `operaflow show` says which provider ran each stage.
   */
  async function providersFor(config: RunConfig): Promise<string[]> {
    const providers = workerProviders() ?? config.runtime.providers;
    const current = attempts.get(Context.current());
    if (current) await recordAttemptProviders(db, current.id, providers);
    return providers;
  }

  /** The run's config from its row, refused when it names paths outside this worker's roots (confine.ts). */
  const runConfig = (runId: string): Promise<RunConfig> =>
    cachedPromise(configs, runId, async () => {
      const config = runConfigSchema.parse((await requireRun(db, runId)).config);
      const outside = pathsOutsideRoots(config);
      if (outside.length) {
        throw new PermanentError(
          `this worker reads and writes only under ${workerRoots().join(', ')}; the run's config names ${outside.join(', ')} (set OPERAFLOW_WORKER_ROOTS on the worker to allow more)`,
        );
      }
      return config;
    });

  const runDir = runDirOf;

  const loadDataset = (ref: DatasetRef): Promise<DatasetFile> =>
    cachedPromise(datasets, ref.artifact.sha256, () => getJson<DatasetFile>(ref.artifact));

  function heartbeat(details: object): void {
    const ctx = Context.current();
    lastDetails.set(ctx, details);
    ctx.heartbeat(details);
    if (ctx.cancellationSignal.aborted) throw new CancelledFailure('activity cancelled');
  }

  /**
   * Where the previous attempt got to: its last heartbeat (a retry after a crash), or, for a new activity
   * (an operator's retry after the stage blocked), the progress its last attempt recorded.
   */
  async function resumeDetails<T>(): Promise<T | undefined> {
    const details = activityInfo().heartbeatDetails as T | undefined;
    if (details !== undefined) return details;
    const current = attempts.get(Context.current());
    return current ? ((await lastAttemptProgress(db, current.key, current.attempt)) as T | undefined) : undefined;
  }

  /** One line about what this attempt (numbered as in stage_attempts) does with the previous attempt's progress. */
  function logResume(what: string): void {
    const ctx = Context.current();
    deps.log?.(`${ctx.info.activityType} attempt ${attempts.get(ctx)?.attempt ?? ctx.info.attempt}: ${what}`);
  }

  /**
   * Where a long training stage (SFT, update) restarts after a crash: the partial checkpoint named by the
   * previous attempt's last heartbeat, verified against the hashes that heartbeat recorded. Anything
   * unusable (no partial saved yet, a file missing or changed, a different config) means step 0, and the
   * log says which and why.
   */
  async function resumePartial(
    store: ArtifactStore,
    partialDir: (step: number) => string,
    config: LlamaConfig,
  ): Promise<{ step: number; checkpoint: Checkpoint; progress: PartialProgress } | undefined> {
    const resumed = await resumeDetails<PartialProgress>();
    if (resumed === undefined) return undefined;
    if (resumed.partialStep === undefined || resumed.partialFiles === undefined) {
      logResume(
        `the previous attempt reached step ${resumed.step} but saved no partial checkpoint: restarting from step 0`,
      );
      return undefined;
    }
    try {
      const dir = await fetchCheckpointDir(store.uriOf(partialDir(resumed.partialStep)), resumed.partialFiles);
      const checkpoint = await inPhase('storage', async () => {
        await verifyCheckpointFiles(dir, resumed.partialFiles!);
        return loadCheckpoint(dir, config, { baseDir: resolveBaseDir });
      });
      if (!checkpoint.optimizer) throw new Error('it has no optimizer state');
      if (Number(checkpoint.extra?.step) !== resumed.partialStep)
        throw new Error(`its trainer state says step ${String(checkpoint.extra?.step)}`);
      logResume(
        `resumes from the partial checkpoint at step ${resumed.partialStep} (the previous attempt reached step ${resumed.step})`,
      );
      return { step: resumed.partialStep, checkpoint, progress: resumed };
    } catch (err) {
      if (err instanceof StoreError && err.unreachable) throw err; // retried; the partial may be fine
      logResume(
        `the partial checkpoint at step ${resumed.partialStep} is unusable (${(err as Error).message}): restarting from step 0`,
      );
      return undefined;
    }
  }

  /**
   * Saves a partial checkpoint and returns the heartbeat details that point a later attempt at it. The
   * previous partial is kept (the heartbeat naming this one may never reach the server); older ones go.
   */
  async function savePartial(
    store: ArtifactStore,
    partialDir: (step: number) => string,
    step: number,
    previous: PartialProgress | undefined,
    every: number,
    ckpt: Checkpoint,
  ): Promise<PartialProgress> {
    const files = await saveCheckpointPublished(store, partialDir(step), ckpt);
    const superseded = previous?.partialStep !== undefined ? previous.partialStep - every : 0;
    if (superseded > 0) await inPhase('storage', () => store.remove(partialDir(superseded)));
    const progress = { step, partialStep: step, partialFiles: fileHashes(files) };
    await recordProgress(progress);
    return progress;
  }

  /**
   * The partial log of this attempt of a sharded stage, holding the items a previous attempt finished
   * (as many as its last heartbeat reported). One file per attempt: an attempt presumed dead may still
   * be running, and two writers must never share a file.
   */
  async function openPartialLog<T>(dir: string, shard: number) {
    const info = activityInfo();
    const log = new PartialLog<T>(join(dir, `shard-${shard}.attempt-${info.attempt}.partial.jsonl`));
    const resumed = await resumeDetails<{ item: number; log?: string }>();
    const previous = resumed?.log && resumed.log !== log.name ? new PartialLog<T>(join(dir, resumed.log)) : undefined;
    const items = previous && resumed ? await previous.read(resumed.item) : [];
    if (items.length > 0) logResume(`resumes after the ${items.length} item(s) the previous attempt finished`);
    await log.reset(items);
    return {
      items,
      /** Records one finished item and heartbeats the count. */
      async append(item: T): Promise<void> {
        items.push(item);
        await log.append(item);
        const progress = { item: items.length, log: log.name };
        heartbeat(progress);
        await recordProgress(progress);
      },
      /** Drops this attempt's log and the previous one (the stage's output is recorded). */
      async remove(): Promise<void> {
        await log.remove();
        await previous?.remove();
      },
    };
  }

  /**
   * Runs a stage once: returns the recorded output if an attempt already completed, otherwise records
   * the attempt (worker, timing, output or error) around `body`.
   */
  async function stage<T>(key: StageKey, body: () => Promise<T>): Promise<T> {
    try {
      const done = await completedStageOutput(db, key);
      if (done) return done.output as T;
      // The task token lets a worker on this machine release the attempt at once if this process dies (reaper.ts).
      const taskToken = Buffer.from(Context.current().info.taskToken).toString('base64');
      const attempt = await startStageAttempt(db, key, worker, taskToken);
      deps.log?.(`${key.runId} ${key.stage} iteration ${key.iteration} shard ${key.shard}: attempt ${attempt.attempt}`);
      const ctx = Context.current();
      attempts.set(ctx, { ...attempt, key });
      // Keep-alive: a long engine call between two progress heartbeats (a whole batch of generations) must
      // not look like a dead worker. The engine yields between forwards, so this timer gets to run; it
      // repeats the latest details (or the previous attempt's, so a resume point is never overwritten).
      const keepAlive = setInterval(() => ctx.heartbeat(lastDetails.get(ctx) ?? ctx.info.heartbeatDetails), 1000);
      try {
        const output = await body();
        await finishStageAttempt(db, attempt.id, { status: 'completed', output });
        return output;
      } catch (err) {
        if (unreachableCode(err)) throw err; // nothing can be recorded: see below
        const message = describeError(err);
        if (err instanceof CancelledFailure) {
          // The worker is shutting down or the run was cancelled: not a failure of the stage.
          await finishStageAttempt(db, attempt.id, { status: 'lost', error: `cancelled: ${message}` }).catch(() => {});
          throw err;
        }
        if (err instanceof StoreError && err.unreachable) {
          // Like an unreachable database: retried with backoff for as long as it takes, using up nothing.
          await finishStageAttempt(db, attempt.id, { status: 'lost', error: message });
          throw ApplicationFailure.retryable(message, 'StoreUnreachable');
        }
        await finishStageAttempt(db, attempt.id, { status: 'failed', error: message });
        if (err instanceof PermanentError) throw ApplicationFailure.nonRetryable(err.message, err.name);
        // Only errors of the stage itself use up its attempts; a lost worker or database does not.
        const failures = await failedAttemptsSinceRetry(db, key);
        if (attemptsExhausted(await runConfig(key.runId), failures)) {
          throw ApplicationFailure.nonRetryable(
            `${message} (failed ${failures} time(s): runtime.maxStageAttempts reached)`,
            'StageFailed',
          );
        }
        if (err instanceof Error && err.message !== message) throw new Error(message, { cause: err });
        throw err;
      } finally {
        clearInterval(keepAlive);
      }
    } catch (err) {
      const code = unreachableCode(err);
      // Transient: Temporal retries the activity with backoff, for as long as it takes, using up nothing.
      if (code)
        throw ApplicationFailure.retryable(
          `PostgreSQL at ${databaseHost()} unreachable (${code}), retrying`,
          'DatabaseUnreachable',
        );
      throw err;
    }
  }

  return {
    db,
    log: deps.log,
    runConfig,
    providersFor,
    runDir,
    store: storeOf,
    loadDataset,
    heartbeat,
    resumePartial,
    savePartial,
    openPartialLog,
    stage,
  };
}
