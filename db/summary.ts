/**
 * Reading a run back: the summary `operaflow show` prints, and the state a continuation of the run
 * starts from (`recordedRunState`, used by the workflow on resume and by the CLI).
 */
import { and, desc, eq, sql } from 'drizzle-orm';
import type { DatasetRef, EvalResult, RunState, SftOutput, UpdateOutput } from '../activities/types';
import type { Db } from './client';
import { latestMetrics, listEvents } from './records';
import { completedStageOutput, listStageAttempts, requireRun } from './runs';
import { artifacts, events, metrics, samples, stageAttempts, type RunStatus } from './schema';

export interface RunSummary {
  id: string;
  name: string | null;
  group: string | null;
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
      /** Execution providers its models ran on ("cuda,cpu"); null for a stage without a model. */
      providers: string | null;
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
      providers: a.providers,
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
    group: run.group,
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
