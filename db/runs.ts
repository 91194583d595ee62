/**
 * Runs and their stage attempts. Stage attempts are append-only by design: each execution of a stage is
 * a fact worth keeping, and its number is allocated here under the unique key.
 */
import { and, asc, desc, eq, sql } from 'drizzle-orm';
import type { Db } from './client';
import { events, runs, stageAttempts, type NewRun, type Run, type RunStatus, type StageAttempt } from './schema';

/**
 * PostgreSQL text and jsonb cannot hold U+0000, which a byte-level model happily generates: it is
 * replaced by U+FFFD in everything written (responses, prompts, error messages that quote them).
 */
export function pgSafe<T>(value: T): T {
  if (typeof value === 'string') return value.replace(/\u0000/g, '\uFFFD') as T;
  if (Array.isArray(value)) return value.map(pgSafe) as T;
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, pgSafe(v)])) as T;
  }
  return value;
}

/** Error text for a row: NUL-free and bounded (drizzle errors quote whole queries and their parameters). */
export function errorText(message: string, max = 4000): string {
  const clean = pgSafe(message);
  return clean.length > max ? `${clean.slice(0, max)}… (${clean.length - max} more characters)` : clean;
}

/** Run statuses after which the workflow has ended. */
export const TERMINAL_STATUSES: readonly RunStatus[] = ['completed', 'failed', 'cancelled'];

// ---------------------------------------------------------------- runs

/** Inserts the run unless its id exists; returns the stored row either way (a second `train` attaches). */
export async function createRun(db: Db, run: NewRun): Promise<{ run: Run; created: boolean }> {
  const inserted = await db.insert(runs).values(run).onConflictDoNothing({ target: runs.id }).returning();
  if (inserted[0]) return { run: inserted[0], created: true };
  const existing = await getRun(db, run.id);
  if (!existing) throw new Error(`run ${run.id} vanished while being created`);
  return { run: existing, created: false };
}

/** Removes a run and everything recorded about it (rows of every table cascade). */
export async function deleteRun(db: Db, id: string): Promise<void> {
  await db.delete(runs).where(eq(runs.id, id));
}

export async function getRun(db: Db, id: string): Promise<Run | undefined> {
  const rows = await db.select().from(runs).where(eq(runs.id, id)).limit(1);
  return rows[0];
}

/** The run, or an error that says how to list the runs there are. */
export async function requireRun(db: Db, id: string): Promise<Run> {
  const run = await getRun(db, id);
  if (!run) throw new Error(`no run with id "${id}" (see \`operaflow runs\`)`);
  return run;
}

/** The newest runs first; only those of `group` when given. */
export async function listRuns(db: Db, limit = 50, group?: string): Promise<Run[]> {
  return db
    .select()
    .from(runs)
    .where(group === undefined ? undefined : eq(runs.group, group))
    .orderBy(desc(runs.createdAt))
    .limit(limit);
}

/** Every run of `group`, oldest first (a sweep records its runs in the order they start). */
export async function runsInGroup(db: Db, group: string): Promise<Run[]> {
  return db.select().from(runs).where(eq(runs.group, group)).orderBy(asc(runs.createdAt), asc(runs.id));
}

export interface RunStatusUpdate {
  status: RunStatus;
  error?: string | null;
  currentIteration?: number;
  summary?: Record<string, unknown>;
  /** Sets started_at if it is still empty. */
  started?: boolean;
  /** Sets finished_at (terminal statuses) or clears it (a resumed run). */
  finished?: boolean;
}

export async function setRunStatus(db: Db, id: string, update: RunStatusUpdate): Promise<void> {
  const set: Record<string, unknown> = { status: update.status, updatedAt: new Date() };
  if (update.error !== undefined) set.error = update.error === null ? null : errorText(update.error);
  if (update.summary !== undefined) set.summary = pgSafe(update.summary);
  if (update.currentIteration !== undefined) set.currentIteration = update.currentIteration;
  if (update.started) set.startedAt = sql`coalesce(${runs.startedAt}, now())`;
  if (update.finished === true) set.finishedAt = new Date();
  if (update.finished === false) set.finishedAt = null;
  await db.update(runs).set(set).where(eq(runs.id, id));
}

// ---------------------------------------------------------------- stage attempts

export interface StageKey {
  runId: string;
  stage: string;
  iteration: number;
  shard: number;
}

const keyWhere = (k: StageKey) =>
  and(
    eq(stageAttempts.runId, k.runId),
    eq(stageAttempts.stage, k.stage),
    eq(stageAttempts.iteration, k.iteration),
    eq(stageAttempts.shard, k.shard),
  );

/** The output of the stage's completed attempt, if one completed: the idempotency check of every activity. */
export async function completedStageOutput(db: Db, key: StageKey): Promise<{ output: unknown } | undefined> {
  const rows = await db
    .select({ output: stageAttempts.output })
    .from(stageAttempts)
    .where(and(keyWhere(key), eq(stageAttempts.status, 'completed')))
    .orderBy(desc(stageAttempts.attempt))
    .limit(1);
  return rows[0] ? { output: rows[0].output } : undefined;
}

/**
 * Records the start of an attempt and returns its id. Attempts still marked running for this key belong
 * to executions that died (killed worker, heartbeat timeout) and are closed as `lost`: no fault of the
 * stage, so they do not count towards its attempts. The attempt number is max + 1, retried on the
 * unique key if two executions race.
 */
export async function startStageAttempt(
  db: Db,
  key: StageKey,
  worker: string,
  taskToken?: string,
): Promise<{ id: number; attempt: number }> {
  await db
    .update(stageAttempts)
    .set({
      status: 'lost',
      finishedAt: new Date(),
      error: 'abandoned: the worker running it stopped heartbeating (crashed or timed out)',
    })
    .where(and(keyWhere(key), eq(stageAttempts.status, 'running')));
  for (let tries = 0; tries < 5; tries++) {
    const [last] = await db
      .select({ attempt: sql<number>`coalesce(max(${stageAttempts.attempt}), 0)` })
      .from(stageAttempts)
      .where(keyWhere(key));
    const attempt = Number(last?.attempt ?? 0) + 1;
    const inserted = await db
      .insert(stageAttempts)
      .values({ ...key, attempt, status: 'running', worker, taskToken: taskToken ?? null })
      .onConflictDoNothing()
      .returning({ id: stageAttempts.id });
    if (inserted[0]) return { id: inserted[0].id, attempt };
  }
  throw new Error(`could not allocate an attempt number for ${key.stage} of run ${key.runId}`);
}

export async function finishStageAttempt(
  db: Db,
  id: number,
  result: { status: 'completed'; output: unknown } | { status: 'failed' | 'lost'; error: string },
): Promise<void> {
  await db
    .update(stageAttempts)
    .set({
      status: result.status,
      finishedAt: new Date(),
      durationMs: sql`(extract(epoch from now() - ${stageAttempts.startedAt}) * 1000)::int`,
      output: result.status === 'completed' ? pgSafe(result.output) : null,
      error: result.status === 'completed' ? null : errorText(result.error),
    })
    .where(eq(stageAttempts.id, id));
}

/** Records the execution providers an attempt's engine sessions run on (stage_attempts.providers). */
export async function recordAttemptProviders(db: Db, id: number, providers: readonly string[]): Promise<void> {
  await db
    .update(stageAttempts)
    .set({ providers: providers.join(',') })
    .where(eq(stageAttempts.id, id));
}

/** Records where a later attempt of this stage can resume (a partial checkpoint, a partial log). */
export async function recordAttemptProgress(db: Db, id: number, progress: Record<string, unknown>): Promise<void> {
  await db
    .update(stageAttempts)
    .set({ progress: pgSafe(progress) })
    .where(eq(stageAttempts.id, id));
}

/** The progress the latest earlier attempt of a stage recorded, if any (for a retry that has no heartbeat to go on). */
export async function lastAttemptProgress(
  db: Db,
  key: StageKey,
  before: number,
): Promise<Record<string, unknown> | undefined> {
  const rows = await db
    .select({ progress: stageAttempts.progress })
    .from(stageAttempts)
    .where(and(keyWhere(key), sql`${stageAttempts.attempt} < ${before}`, sql`${stageAttempts.progress} is not null`))
    .orderBy(desc(stageAttempts.attempt))
    .limit(1);
  return rows[0]?.progress ?? undefined;
}

/**
 * Attempts of a stage that failed through an error of the stage itself (lost workers do not count) since
 * the run was last retried or resumed by an operator: each of those starts a fresh budget of attempts.
 */
export async function failedAttemptsSinceRetry(db: Db, key: StageKey): Promise<number> {
  const since = sql`coalesce((select max(${events.at}) from ${events} where ${events.runId} = ${key.runId} and ${events.type} in ('retried', 'resumed')), '-infinity'::timestamptz)`;
  const [row] = await db
    .select({ n: sql<number>`count(*)::int` })
    .from(stageAttempts)
    .where(and(keyWhere(key), eq(stageAttempts.status, 'failed'), sql`${stageAttempts.startedAt} > ${since}`));
  return Number(row?.n ?? 0);
}

/** The stage that started most recently, with how many of its shards exist and how many completed (for progress lines). */
export async function latestStageProgress(
  db: Db,
  runId: string,
): Promise<{ stage: string; iteration: number; shards: number; done: number } | undefined> {
  const rows = await db
    .select({
      stage: stageAttempts.stage,
      iteration: stageAttempts.iteration,
      shards: sql<number>`count(distinct ${stageAttempts.shard})::int`,
      done: sql<number>`count(distinct ${stageAttempts.shard}) filter (where ${stageAttempts.status} = 'completed')::int`,
    })
    .from(stageAttempts)
    .where(eq(stageAttempts.runId, runId))
    .groupBy(stageAttempts.stage, stageAttempts.iteration)
    .orderBy(desc(sql`max(${stageAttempts.startedAt})`))
    .limit(1);
  return rows[0];
}

export async function listStageAttempts(db: Db, runId: string): Promise<StageAttempt[]> {
  return db
    .select()
    .from(stageAttempts)
    .where(eq(stageAttempts.runId, runId))
    .orderBy(
      asc(stageAttempts.iteration),
      asc(stageAttempts.startedAt),
      asc(stageAttempts.shard),
      asc(stageAttempts.attempt),
    );
}

/** Attempts still `running` under a worker of this host (`host:pid`), with their task tokens. */
export async function runningAttemptsOnHost(db: Db, host: string): Promise<StageAttempt[]> {
  return db
    .select()
    .from(stageAttempts)
    .where(
      and(
        eq(stageAttempts.status, 'running'),
        sql`${stageAttempts.worker} like ${`${host.replace(/[\\%_]/g, '\\$&')}:%`}`,
        sql`${stageAttempts.taskToken} is not null`,
      ),
    );
}
