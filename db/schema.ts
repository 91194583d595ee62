/**
 * The PostgreSQL schema: one source of truth for tables and their TypeScript row types.
 * Column names are snake_case in SQL and camelCase in TS. Every table a retried activity writes has a
 * natural unique key, so writers upsert (`onConflictDoUpdate` / `onConflictDoNothing`) instead of
 * duplicating rows when Temporal retries them.
 * After editing, run `npm run db:generate` and commit the new file under db/migrations/.
 */
import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  serial,
  text,
  timestamp,
  unique,
} from 'drizzle-orm/pg-core';

export const RUN_STATUSES = ['pending', 'running', 'paused', 'blocked', 'completed', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
/**
 * `failed`: the stage itself raised an error (counts towards runtime.maxStageAttempts); `lost`: the attempt
 * ended through no fault of the stage (its worker died or shut down) and is retried without limit.
 */
export const STAGE_ATTEMPT_STATUSES = ['running', 'completed', 'failed', 'lost'] as const;
export type StageAttemptStatus = (typeof STAGE_ATTEMPT_STATUSES)[number];
export const SAMPLE_SPLITS = ['train', 'eval'] as const;
export type SampleSplit = (typeof SAMPLE_SPLITS)[number];
/** Known artifact kinds; the column is free text so new kinds need no migration. */
export type ArtifactKind = 'dataset' | 'checkpoint' | 'optimizer' | 'rollouts' | 'scores' | 'eval' | (string & {});

/** SQL `col IN ('a', 'b')`: status columns reject typos at write time instead of at read time. */
const oneOf = (column: { name: string }, values: readonly string[]) =>
  sql.raw(`"${column.name}" IN (${values.map((v) => `'${v}'`).join(', ')})`);

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();

/** One training run; its id is also the Temporal workflow id (starting it twice attaches instead). */
export const runs = pgTable(
  'runs',
  {
    id: text('id').primaryKey(),
    name: text('name'),
    /** Runs that belong together (a sweep's variants and seeds, or any set given to `train --group`). */
    group: text('group'),
    status: text('status').$type<RunStatus>().notNull(),
    config: jsonb('config').$type<Record<string, unknown>>().notNull(),
    configHash: text('config_hash').notNull(),
    codeVersion: text('code_version').notNull(),
    seed: integer('seed').notNull(),
    workflowId: text('workflow_id').notNull(),
    currentIteration: integer('current_iteration').notNull().default(0),
    summary: jsonb('summary').$type<Record<string, unknown>>(),
    error: text('error'),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true })
      .notNull()
      .defaultNow()
      .$onUpdate(() => sql`now()`),
    startedAt: timestamp('started_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    index('runs_created_at_idx').on(t.createdAt),
    index('runs_group_idx').on(t.group),
    check('runs_status_check', oneOf(t.status, RUN_STATUSES)),
  ],
);

/** Every execution of a stage (per iteration and shard); Temporal retries add attempts, never replace them. */
export const stageAttempts = pgTable(
  'stage_attempts',
  {
    id: serial('id').primaryKey(),
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    stage: text('stage').notNull(),
    iteration: integer('iteration').notNull().default(0),
    shard: integer('shard').notNull().default(0),
    attempt: integer('attempt').notNull(),
    status: text('status').$type<StageAttemptStatus>().notNull(),
    worker: text('worker'),
    /** The ONNX Runtime execution providers the attempt's engine sessions used ("cuda,cpu"); null when it ran no model. */
    providers: text('providers'),
    startedAt: timestamp('started_at', { withTimezone: true }).notNull().defaultNow(),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
    durationMs: integer('duration_ms'),
    error: text('error'),
    output: jsonb('output').$type<unknown>(),
    /** Where a later attempt can resume (partial checkpoint, partial log), recorded as the attempt goes. */
    progress: jsonb('progress').$type<Record<string, unknown>>(),
    /** The Temporal task token of this attempt (base64): a worker on the same machine releases it when its worker died. */
    taskToken: text('task_token'),
  },
  (t) => [
    unique('stage_attempts_key').on(t.runId, t.stage, t.iteration, t.shard, t.attempt),
    check('stage_attempts_status_check', oneOf(t.status, STAGE_ATTEMPT_STATUSES)),
  ],
);

/** Scalar metrics by training step; (run, step, name) is unique so a retried step overwrites, not duplicates. */
export const metrics = pgTable(
  'metrics',
  {
    id: serial('id').primaryKey(),
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    step: integer('step').notNull(),
    name: text('name').notNull(),
    value: doublePrecision('value').notNull(),
    recordedAt: timestamp('recorded_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [unique('metrics_key').on(t.runId, t.step, t.name)],
);

/** One scored rollout (train) or evaluation generation (eval), with its OPERA reward components. */
export const samples = pgTable(
  'samples',
  {
    id: serial('id').primaryKey(),
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    split: text('split').$type<SampleSplit>().notNull(),
    iteration: integer('iteration').notNull(),
    promptId: text('prompt_id').notNull(),
    sampleIndex: integer('sample_index').notNull(),
    prompt: text('prompt').notNull(),
    reference: text('reference').notNull(),
    taskType: text('task_type').notNull(),
    response: text('response').notNull(),
    /** Generated tokens, the final EOS included when the model chose to stop (null on rows from before 0001). */
    responseTokens: integer('response_tokens'),
    reward: doublePrecision('reward').notNull(),
    ppl: doublePrecision('ppl').notNull(),
    reflection: doublePrecision('reflection').notNull(),
    reflectionCount: integer('reflection_count').notNull(),
    correct: boolean('correct'),
    advantage: doublePrecision('advantage'),
    logpFull: doublePrecision('logp_full'),
    logpInitial: doublePrecision('logp_initial'),
    logpSegments: jsonb('logp_segments').$type<number[]>(),
    /** Mean per-token probability of the reference after prompt + response (the `likelihood` reward); null before 0005. */
    probFull: doublePrecision('prob_full'),
    createdAt: createdAt(),
  },
  (t) => [
    unique('samples_key').on(t.runId, t.split, t.iteration, t.promptId, t.sampleIndex),
    check('samples_split_check', oneOf(t.split, SAMPLE_SPLITS)),
  ],
);

/** Files in the artifact store, addressed by uri and verified by sha256. */
export const artifacts = pgTable(
  'artifacts',
  {
    id: serial('id').primaryKey(),
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    kind: text('kind').$type<ArtifactKind>().notNull(),
    iteration: integer('iteration').notNull().default(0),
    name: text('name').notNull(),
    uri: text('uri').notNull(),
    sha256: text('sha256').notNull(),
    // Checkpoints can exceed 2 GiB; number mode is exact up to 2^53 bytes, far beyond any file here.
    bytes: bigint('bytes', { mode: 'number' }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [unique('artifacts_key').on(t.runId, t.kind, t.iteration, t.name)],
);

/** Append-only audit log: who started, paused, retried, resumed or cancelled a run, and when. */
export const events = pgTable(
  'events',
  {
    id: serial('id').primaryKey(),
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    type: text('type').notNull(),
    actor: text('actor').notNull(),
    detail: jsonb('detail').$type<Record<string, unknown>>(),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('events_run_at_idx').on(t.runId, t.at)],
);

export type Run = typeof runs.$inferSelect;
export type NewRun = typeof runs.$inferInsert;
export type StageAttempt = typeof stageAttempts.$inferSelect;
export type NewStageAttempt = typeof stageAttempts.$inferInsert;
export type Metric = typeof metrics.$inferSelect;
export type NewMetric = typeof metrics.$inferInsert;
export type Sample = typeof samples.$inferSelect;
export type NewSample = typeof samples.$inferInsert;
export type Artifact = typeof artifacts.$inferSelect;
export type NewArtifact = typeof artifacts.$inferInsert;
export type Event = typeof events.$inferSelect;
export type NewEvent = typeof events.$inferInsert;
