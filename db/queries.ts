/**
 * Every read and write the activities and the CLI make. Writers are idempotent: rows with a natural key
 * are upserted on it, so a retried activity (or a resumed run) overwrites what it wrote before instead of
 * adding a second copy. Stage attempts are the one append-only exception, by design: each execution of a
 * stage is a fact worth keeping, and its number is allocated here under the unique key.
 */
import { and, asc, desc, eq, getTableColumns, inArray, sql, type SQL } from 'drizzle-orm';
import type { PgTable } from 'drizzle-orm/pg-core';
import type { DatasetRef, EvalResult, RunState, SftOutput, UpdateOutput } from '../activities/types';
import type { Db } from './client';
import {
  artifacts,
  events,
  metrics,
  runs,
  samples,
  stageAttempts,
  type Artifact,
  type Event,
  type NewArtifact,
  type NewRun,
  type NewSample,
  type Run,
  type RunStatus,
  type StageAttempt,
} from './schema';

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

export async function listRuns(db: Db, limit = 50): Promise<Run[]> {
  return db.select().from(runs).orderBy(desc(runs.createdAt)).limit(limit);
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
 * to executions that died (killed worker, heartbeat timeout) and are closed as failed. The attempt
 * number is max + 1, retried on the unique key if two executions race.
 */
export async function startStageAttempt(
  db: Db,
  key: StageKey,
  worker: string,
): Promise<{ id: number; attempt: number }> {
  await db
    .update(stageAttempts)
    .set({
      status: 'failed',
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
      .values({ ...key, attempt, status: 'running', worker })
      .onConflictDoNothing()
      .returning({ id: stageAttempts.id });
    if (inserted[0]) return { id: inserted[0].id, attempt };
  }
  throw new Error(`could not allocate an attempt number for ${key.stage} of run ${key.runId}`);
}

export async function finishStageAttempt(
  db: Db,
  id: number,
  result: { status: 'completed'; output: unknown } | { status: 'failed'; error: string },
): Promise<void> {
  await db
    .update(stageAttempts)
    .set({
      status: result.status,
      finishedAt: new Date(),
      durationMs: sql`(extract(epoch from now() - ${stageAttempts.startedAt}) * 1000)::int`,
      output: result.status === 'completed' ? pgSafe(result.output) : null,
      error: result.status === 'failed' ? errorText(result.error) : null,
    })
    .where(eq(stageAttempts.id, id));
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

// ---------------------------------------------------------------- metrics, samples, artifacts, events

export async function upsertMetrics(
  db: Db,
  runId: string,
  step: number,
  values: Record<string, number>,
): Promise<void> {
  const rows = Object.entries(values)
    .filter(([, value]) => Number.isFinite(value))
    .map(([name, value]) => ({ runId, step, name, value }));
  if (rows.length === 0) return;
  await db
    .insert(metrics)
    .values(rows)
    .onConflictDoUpdate({
      target: [metrics.runId, metrics.step, metrics.name],
      set: { value: sql`excluded.value`, recordedAt: sql`now()` },
    });
}

/** name → {step, value} of the most recent step that recorded it. */
export async function latestMetrics(db: Db, runId: string): Promise<Record<string, { step: number; value: number }>> {
  const rows = await db
    .selectDistinctOn([metrics.name], { name: metrics.name, step: metrics.step, value: metrics.value })
    .from(metrics)
    .where(eq(metrics.runId, runId))
    .orderBy(asc(metrics.name), desc(metrics.step));
  return Object.fromEntries(rows.map((r) => [r.name, { step: r.step, value: r.value }]));
}

export async function metricSeries(
  db: Db,
  runId: string,
  names?: string[],
): Promise<{ step: number; name: string; value: number }[]> {
  return db
    .select({ step: metrics.step, name: metrics.name, value: metrics.value })
    .from(metrics)
    .where(names ? and(eq(metrics.runId, runId), inArray(metrics.name, names)) : eq(metrics.runId, runId))
    .orderBy(asc(metrics.step), asc(metrics.name));
}

/**
 * `SET col = excluded.col` for every column of `table` but `keep`: a retried write replaces the row's
 * values, and a column added to the schema is covered without touching the upsert.
 */
function overwriteFromExcluded<T extends PgTable>(
  table: T,
  keep: (keyof T['$inferInsert'] & string)[],
): Record<string, SQL> {
  return Object.fromEntries(
    Object.entries(getTableColumns(table))
      .filter(([key]) => !(keep as string[]).includes(key))
      .map(([key, column]) => [key, sql.raw(`excluded.${column.name}`)]),
  );
}

/** Upserts in chunks (PostgreSQL caps a statement at 65535 parameters). */
export async function upsertSamples(db: Db, rows: NewSample[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 500) {
    const chunk = rows.slice(i, i + 500).map((r) => pgSafe(r));
    await db
      .insert(samples)
      .values(chunk)
      .onConflictDoUpdate({
        target: [samples.runId, samples.split, samples.iteration, samples.promptId, samples.sampleIndex],
        set: overwriteFromExcluded(samples, [
          'id',
          'runId',
          'split',
          'iteration',
          'promptId',
          'sampleIndex',
          'createdAt',
        ]),
      });
  }
}

export async function recordArtifact(db: Db, artifact: NewArtifact): Promise<Artifact> {
  const [row] = await db
    .insert(artifacts)
    .values(artifact)
    .onConflictDoUpdate({
      target: [artifacts.runId, artifacts.kind, artifacts.iteration, artifacts.name],
      set: { uri: sql`excluded.uri`, sha256: sql`excluded.sha256`, bytes: sql`excluded.bytes` },
    })
    .returning();
  if (!row) throw new Error(`recording artifact ${artifact.kind}/${artifact.name} returned no row`);
  return row;
}

export async function getArtifact(
  db: Db,
  key: { runId: string; kind: string; iteration: number; name: string },
): Promise<Artifact | undefined> {
  const rows = await db
    .select()
    .from(artifacts)
    .where(
      and(
        eq(artifacts.runId, key.runId),
        eq(artifacts.kind, key.kind),
        eq(artifacts.iteration, key.iteration),
        eq(artifacts.name, key.name),
      ),
    )
    .limit(1);
  return rows[0];
}

export async function listArtifacts(db: Db, runId: string, kind?: string): Promise<Artifact[]> {
  return db
    .select()
    .from(artifacts)
    .where(kind ? and(eq(artifacts.runId, runId), eq(artifacts.kind, kind)) : eq(artifacts.runId, runId))
    .orderBy(asc(artifacts.iteration), asc(artifacts.kind), asc(artifacts.name));
}

export async function appendEvent(
  db: Db,
  runId: string,
  type: string,
  actor: string,
  detail?: Record<string, unknown>,
): Promise<void> {
  await db.insert(events).values({ runId, type, actor, detail: detail ? pgSafe(detail) : null });
}

export async function listEvents(db: Db, runId: string): Promise<Event[]> {
  return db.select().from(events).where(eq(events.runId, runId)).orderBy(asc(events.at), asc(events.id));
}

// ---------------------------------------------------------------- summary (`operaflow show`)

export interface RunSummary {
  id: string;
  name: string | null;
  status: RunStatus;
  error: string | null;
  currentIteration: number;
  configHash: string;
  codeVersion: string;
  seed: number;
  workflowId: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  summary: Record<string, unknown> | null;
  stages: {
    stage: string;
    iteration: number;
    shard: number;
    status: string;
    attempts: {
      attempt: number;
      status: string;
      worker: string | null;
      durationMs: number | null;
      error: string | null;
      startedAt: string;
    }[];
  }[];
  metrics: Record<string, { step: number; value: number }>;
  counts: { samples: number; metrics: number; artifacts: number; events: number; stageAttempts: number };
  events: { type: string; actor: string; at: string; detail: Record<string, unknown> | null }[];
}

async function countRows(
  db: Db,
  table: typeof samples | typeof metrics | typeof artifacts | typeof events,
  runId: string,
): Promise<number> {
  const [row] = await db
    .select({ n: sql<number>`count(*)::int` })
    .from(table)
    .where(eq(table.runId, runId));
  return Number(row?.n ?? 0);
}

export async function runSummary(db: Db, runId: string): Promise<RunSummary> {
  const run = await requireRun(db, runId);
  const attempts = await listStageAttempts(db, runId);
  const stages: RunSummary['stages'] = [];
  const byKey = new Map<string, RunSummary['stages'][number]>();
  for (const a of attempts) {
    const key = `${a.stage}/${a.iteration}/${a.shard}`;
    let entry = byKey.get(key);
    if (!entry) {
      entry = { stage: a.stage, iteration: a.iteration, shard: a.shard, status: a.status, attempts: [] };
      byKey.set(key, entry);
      stages.push(entry);
    }
    entry.attempts.push({
      attempt: a.attempt,
      status: a.status,
      worker: a.worker,
      durationMs: a.durationMs,
      error: a.error,
      startedAt: a.startedAt.toISOString(),
    });
    // A stage is as done as its best attempt.
    if (a.status === 'completed' || (entry.status !== 'completed' && a.status === 'running')) entry.status = a.status;
    else if (entry.status !== 'completed' && entry.status !== 'running') entry.status = a.status;
  }
  const [latest, nSamples, nMetrics, nArtifacts, nEvents, evs] = await Promise.all([
    latestMetrics(db, runId),
    countRows(db, samples, runId),
    countRows(db, metrics, runId),
    countRows(db, artifacts, runId),
    countRows(db, events, runId),
    listEvents(db, runId),
  ]);
  return {
    id: run.id,
    name: run.name,
    status: run.status,
    error: run.error,
    currentIteration: run.currentIteration,
    configHash: run.configHash,
    codeVersion: run.codeVersion,
    seed: run.seed,
    workflowId: run.workflowId,
    createdAt: run.createdAt.toISOString(),
    startedAt: run.startedAt?.toISOString() ?? null,
    finishedAt: run.finishedAt?.toISOString() ?? null,
    summary: run.summary ?? null,
    stages,
    metrics: latest,
    counts: {
      samples: nSamples,
      metrics: nMetrics,
      artifacts: nArtifacts,
      events: nEvents,
      stageAttempts: attempts.length,
    },
    events: evs.map((e) => ({ type: e.type, actor: e.actor, at: e.at.toISOString(), detail: e.detail ?? null })),
  };
}

/** The last iteration whose update completed, with the checkpoint it produced (for `resume` of a dead run). */
export async function lastCompletedUpdate(
  db: Db,
  runId: string,
): Promise<{ iteration: number; output: unknown } | undefined> {
  const rows = await db
    .select({ iteration: stageAttempts.iteration, output: stageAttempts.output })
    .from(stageAttempts)
    .where(
      and(eq(stageAttempts.runId, runId), eq(stageAttempts.stage, 'update'), eq(stageAttempts.status, 'completed')),
    )
    .orderBy(desc(stageAttempts.iteration))
    .limit(1);
  return rows[0];
}

/**
 * The state a continuation of a run starts from, rebuilt from its recorded stages: its last iteration
 * whose update completed (weights, optimizer, EMA, data position), or undefined when the stages before
 * RL have not all completed (the run then starts over; completed stages return their recorded output).
 * The workflow carries the same state in memory; this is how a run whose workflow closed gets it back.
 */
export async function recordedRunState(db: Db, runId: string): Promise<RunState | undefined> {
  const output = async <T>(stage: string, iteration: number) =>
    (await completedStageOutput(db, { runId, stage, iteration, shard: 0 }))?.output as T | undefined;
  const dataset = await output<DatasetRef>('prepareDataset', 0);
  const sft = await output<SftOutput>('coldStartSft', 0);
  const evalBefore = await output<EvalResult>('evaluate', 0);
  if (!dataset || !sft || !evalBefore) return undefined;
  const last = await lastCompletedUpdate(db, runId);
  const update = last?.output as UpdateOutput | undefined;
  const evalLatest = (last && (await output<EvalResult>('evaluate', last.iteration))) ?? evalBefore;
  return {
    iteration: last?.iteration ?? 0,
    dataset,
    reference: sft.checkpoint,
    checkpoint: update?.checkpoint ?? sft.checkpoint,
    optimizer: update?.optimizer ?? null,
    ema: update?.ema ?? null,
    dataPosition: update?.dataPosition ?? 0,
    evalBefore,
    evalLatest,
  };
}
