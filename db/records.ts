/**
 * What stages record: metrics, samples, artifacts and audit events. Writers are idempotent: rows are
 * upserted on their natural key, so a retried activity (or a resumed run) overwrites what it wrote
 * before instead of adding a second copy. Events are append-only (an audit log).
 */
import { and, asc, desc, eq, getTableColumns, inArray, sql, type SQL } from 'drizzle-orm';
import type { PgTable } from 'drizzle-orm/pg-core';
import type { Db } from './client';
import { pgSafe } from './runs';
import {
  artifacts,
  events,
  metrics,
  samples,
  type Artifact,
  type Event,
  type NewArtifact,
  type NewSample,
} from './schema';

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

/** The natural key of every sample of a run (what `operaflow verify` counts against the stage artifacts). */
export async function sampleKeys(
  db: Db,
  runId: string,
): Promise<{ split: string; iteration: number; promptId: string; sampleIndex: number }[]> {
  return db
    .select({
      split: samples.split,
      iteration: samples.iteration,
      promptId: samples.promptId,
      sampleIndex: samples.sampleIndex,
    })
    .from(samples)
    .where(eq(samples.runId, runId));
}

/** A run's samples, optionally of one split, iteration and prompt, in their natural order (at most `limit`). */
export async function listSamples(
  db: Db,
  runId: string,
  filter: { split?: string; iteration?: number; promptId?: string; limit?: number } = {},
): Promise<(typeof samples.$inferSelect)[]> {
  const where = [eq(samples.runId, runId)];
  if (filter.split !== undefined) where.push(eq(samples.split, filter.split as 'train' | 'eval'));
  if (filter.iteration !== undefined) where.push(eq(samples.iteration, filter.iteration));
  if (filter.promptId !== undefined) where.push(eq(samples.promptId, filter.promptId));
  return db
    .select()
    .from(samples)
    .where(and(...where))
    .orderBy(asc(samples.split), asc(samples.iteration), asc(samples.promptId), asc(samples.sampleIndex))
    .limit(filter.limit ?? 1000);
}

/** One sample of a run by its row id. */
export async function getSample(db: Db, runId: string, id: number): Promise<typeof samples.$inferSelect | undefined> {
  const rows = await db
    .select()
    .from(samples)
    .where(and(eq(samples.runId, runId), eq(samples.id, id)))
    .limit(1);
  return rows[0];
}

/** The iterations a run has samples of, per split (the samples page's iteration picker). */
export async function sampleIterations(db: Db, runId: string): Promise<{ split: string; iteration: number }[]> {
  return db
    .selectDistinct({ split: samples.split, iteration: samples.iteration })
    .from(samples)
    .where(eq(samples.runId, runId))
    .orderBy(asc(samples.split), asc(samples.iteration));
}
