/**
 * The unique keys are what make retried activities safe: a second write of the same
 * (run, step, name) / (run, split, iteration, prompt, sample) / ... must update or be rejected, never duplicate.
 */
import { and, eq, sql } from 'drizzle-orm';
import { createDb, type DbHandle } from '../../db/client';
import { upsertSamples } from '../../db/queries';
import { artifacts, events, metrics, runs, samples, stageAttempts, type NewSample, type Run } from '../../db/schema';

let h: DbHandle;
const runId = `schema-test-${process.pid}`;

beforeAll(async () => {
  h = createDb();
  await h.db.insert(runs).values({
    id: runId,
    status: 'pending',
    config: { model: 'tiny' },
    configHash: 'abc',
    codeVersion: 'test',
    seed: 7,
    workflowId: runId,
  });
});
afterAll(async () => {
  await h.db.delete(runs).where(eq(runs.id, runId));
  await h.close();
});

/** The SQLSTATE of a failed drizzle query (drizzle wraps the pg error in `cause`). */
async function sqlState(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    const e = err as { code?: string; cause?: { code?: string } };
    return e.cause?.code ?? e.code;
  }
}

test('runs get defaults and round-trip jsonb config', async () => {
  const [run] = await h.db.select().from(runs).where(eq(runs.id, runId));
  const expected: Partial<Run> = {
    status: 'pending',
    currentIteration: 0,
    config: { model: 'tiny' },
    summary: null,
    startedAt: null,
  };
  expect(run).toMatchObject(expected);
  expect(run!.createdAt).toBeInstanceOf(Date);
});

test('a metric written twice for the same step keeps one row with the latest value', async () => {
  for (const value of [1.5, 0.25]) {
    await h.db
      .insert(metrics)
      .values({ runId, step: 3, name: 'loss', value })
      .onConflictDoUpdate({ target: [metrics.runId, metrics.step, metrics.name], set: { value: sql`excluded.value` } });
  }
  const rows = await h.db
    .select()
    .from(metrics)
    .where(and(eq(metrics.runId, runId), eq(metrics.step, 3)));
  expect(rows).toHaveLength(1);
  expect(rows[0]!.value).toBe(0.25);
  expect(await sqlState(h.db.insert(metrics).values({ runId, step: 3, name: 'loss', value: 9 }))).toBe('23505');
});

test('samples are unique per (run, split, iteration, prompt, sample index); retries do not duplicate', async () => {
  const sample: NewSample = {
    runId,
    split: 'train',
    iteration: 1,
    promptId: 'p1',
    sampleIndex: 0,
    prompt: 'Q',
    reference: 'A',
    taskType: 'math',
    response: 'A',
    reward: 0.5,
    ppl: 0.4,
    reflection: 0.1,
    reflectionCount: 1,
    correct: true,
    logpSegments: [-1.5, -0.25],
  };
  await h.db.insert(samples).values(sample).onConflictDoNothing();
  await h.db
    .insert(samples)
    .values({ ...sample, reward: 0.9 })
    .onConflictDoNothing();
  await h.db
    .insert(samples)
    .values({ ...sample, split: 'eval' })
    .onConflictDoNothing(); // another key
  const rows = await h.db.select().from(samples).where(eq(samples.runId, runId)).orderBy(samples.split);
  expect(rows.map((r) => [r.split, r.reward])).toEqual([
    ['eval', 0.5],
    ['train', 0.5],
  ]);
  expect(rows[1]!.logpSegments).toEqual([-1.5, -0.25]);
  expect(await sqlState(h.db.insert(samples).values(sample))).toBe('23505');
  expect(await sqlState(h.db.insert(samples).values({ ...sample, promptId: 'p2', split: 'test' as 'train' }))).toBe(
    '23514',
  ); // check constraint
});

test("upsertSamples: a retried write replaces the row's values and never adds a row", async () => {
  const first: NewSample = {
    runId,
    split: 'train',
    iteration: 7,
    promptId: 'q',
    sampleIndex: 2,
    prompt: 'Q',
    reference: 'A',
    taskType: 'writing',
    response: 'first',
    reward: 0.1,
    ppl: 0.2,
    reflection: 0.3,
    reflectionCount: 0,
    logpSegments: [-2],
  };
  await upsertSamples(h.db, [first]);
  const [before] = await h.db
    .select()
    .from(samples)
    .where(and(eq(samples.runId, runId), eq(samples.iteration, 7)));
  await upsertSamples(h.db, [
    {
      ...first,
      response: 'second',
      reward: 0.9,
      correct: false,
      advantage: -1,
      logpFull: -3,
      logpSegments: [-1, -0.5],
    },
  ]);
  const rows = await h.db
    .select()
    .from(samples)
    .where(and(eq(samples.runId, runId), eq(samples.iteration, 7)));
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({
    id: before!.id,
    response: 'second',
    reward: 0.9,
    correct: false,
    advantage: -1,
    logpFull: -3,
    logpSegments: [-1, -0.5],
  });
  expect(rows[0]!.createdAt).toEqual(before!.createdAt);
});

test('stage attempts are unique per (run, stage, iteration, shard, attempt) and statuses are checked', async () => {
  const attempt = {
    runId,
    stage: 'rollout',
    iteration: 2,
    shard: 1,
    attempt: 1,
    status: 'running' as const,
    worker: 'w1',
  };
  await h.db.insert(stageAttempts).values(attempt);
  await h.db.insert(stageAttempts).values({ ...attempt, attempt: 2 });
  expect(await sqlState(h.db.insert(stageAttempts).values(attempt))).toBe('23505');
  expect(
    await sqlState(h.db.insert(stageAttempts).values({ ...attempt, attempt: 3, status: 'done' as 'running' })),
  ).toBe('23514');
  const upserted = await h.db
    .insert(stageAttempts)
    .values({ ...attempt, status: 'completed', durationMs: 12 })
    .onConflictDoUpdate({
      target: [
        stageAttempts.runId,
        stageAttempts.stage,
        stageAttempts.iteration,
        stageAttempts.shard,
        stageAttempts.attempt,
      ],
      set: { status: 'completed', durationMs: 12 },
    })
    .returning();
  expect(upserted[0]).toMatchObject({ status: 'completed', durationMs: 12, worker: 'w1' });
  expect(await h.db.$count(stageAttempts, eq(stageAttempts.runId, runId))).toBe(2);
});

test('artifacts keep sizes above 2^31 exactly and are unique per (run, kind, iteration, name)', async () => {
  const bytes = 5 * 2 ** 31 + 3;
  const artifact = {
    runId,
    kind: 'checkpoint',
    iteration: 4,
    name: 'model.safetensors',
    uri: 'file:///x',
    sha256: 'f'.repeat(64),
    bytes,
  };
  await h.db.insert(artifacts).values(artifact);
  expect(await sqlState(h.db.insert(artifacts).values(artifact))).toBe('23505');
  const [row] = await h.db.select().from(artifacts).where(eq(artifacts.runId, runId));
  expect(row!.bytes).toBe(bytes);
});

test('runs reject unknown statuses, and deleting a run removes its rows', async () => {
  expect(
    await sqlState(
      h.db
        .update(runs)
        .set({ status: 'exploded' as 'failed' })
        .where(eq(runs.id, runId)),
    ),
  ).toBe('23514');
  const other = `${runId}-cascade`;
  await h.db.insert(runs).values({
    id: other,
    status: 'running',
    config: {},
    configHash: 'x',
    codeVersion: 'test',
    seed: 1,
    workflowId: other,
  });
  await h.db.insert(events).values({ runId: other, type: 'started', actor: 'test', detail: { by: 'jest' } });
  await h.db.insert(metrics).values({ runId: other, step: 0, name: 'reward', value: 1 });
  await h.db.delete(runs).where(eq(runs.id, other));
  expect(await h.db.$count(events, eq(events.runId, other))).toBe(0);
  expect(await h.db.$count(metrics, eq(metrics.runId, other))).toBe(0);
});
