/**
 * `operaflow`: the command line of the product.
 *
 *   operaflow train <config.yaml> [--wait] [--json] [--id <run>]   validate, record, start (or attach to) a run
 *   operaflow worker [--queues rollout,train]                        poll task queues (one process)
 *   operaflow runs [--json]                                          list runs
 *   operaflow show <run> [--json]                                    status, stages with attempts, latest metrics
 *   operaflow pause|resume|cancel <run>                              operator signals (resume also revives a failed/cancelled run)
 *   operaflow retry <run>                                            retry the stage a run is blocked on
 *
 * Services: DATABASE_URL / TEMPORAL_ADDRESS when set, else the local ones (started if needed).
 * OPERAFLOW_QUEUE_PREFIX: prepended to the task queue names (`rollout`, `train`) by `train` and `worker`,
 * so separate deployments (or concurrent test runs) can share one Temporal server without stealing work.
 * OPERAFLOW_HEARTBEAT_TIMEOUT (seconds, default 30): how long a silent compute activity may go before
 * Temporal gives it to another worker; a run takes it from the environment of `train`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { Client, Connection, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import cliProgress from 'cli-progress';
import type { CheckpointRef, DatasetRef, EvalResult, SftOutput, UpdateOutput } from '../activities/types';
import { createDb, type DbHandle } from '../db/client';
import {
  TERMINAL_STATUSES,
  appendEvent,
  completedStageOutput,
  createRun,
  lastCompletedUpdate,
  listRuns,
  requireRun,
  runSummary,
  setRunStatus,
  type RunSummary,
} from '../db/queries';
import type { Run } from '../db/schema';
import { modelPresets } from '../engine/config';
import { configHash, loadRunConfig, runConfigSchema, type RunConfig } from '../opera/config';
import {
  TASK_QUEUES,
  cancelSignal,
  pauseSignal,
  progressQuery,
  resumeSignal,
  retryStageSignal,
  trainingRun,
  type RunPlan,
  type RunState,
  type TrainingRunInput,
} from '../workflows/trainingRun';
import { ensureServices } from '../services';

const ROOT = resolve(__dirname, '..');
const USAGE = `usage:
  operaflow train <config.yaml> [--wait] [--json] [--id <run>]
  operaflow worker [--queues rollout,train]
  operaflow runs [--json]
  operaflow show <run> [--json]
  operaflow pause|resume|cancel <run>
  operaflow retry <run>`;

class UsageError extends Error {}

interface Args {
  positional: string[];
  flags: Map<string, string | true>;
}

function parseArgs(argv: string[], valued: string[]): Args {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const [name, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
      if (valued.includes(name)) {
        const value = inline ?? argv[++i];
        if (value === undefined) throw new UsageError(`--${name} needs a value`);
        flags.set(name, value);
      } else flags.set(name, true);
    } else positional.push(a);
  }
  return { positional, flags };
}

const actor = (): string => {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `cli@${hostname()}`;
  }
};

function codeVersion(): string {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return `v${(require('../package.json') as { version: string }).version}`;
  }
}

// ------------------------------------------------------------------ connections

interface Services {
  db: DbHandle;
  client: Client;
  connection: Connection;
  temporalAddress: string;
  databaseUrl: string;
  close(): Promise<void>;
}

async function endpoints(): Promise<{ databaseUrl: string; temporalAddress: string }> {
  return ensureServices({ log: (line) => console.error(line) });
}

async function connect(): Promise<Services> {
  const { databaseUrl, temporalAddress } = await endpoints();
  const db = createDb(databaseUrl);
  const connection = await Connection.connect({ address: temporalAddress });
  const client = new Client({ connection });
  return {
    db,
    client,
    connection,
    temporalAddress,
    databaseUrl,
    async close() {
      await connection.close();
      await db.close();
    },
  };
}

// ------------------------------------------------------------------ train

/** Task queue names, with OPERAFLOW_QUEUE_PREFIX applied. */
export function taskQueues(): { rollout: string; train: string } {
  const prefix = process.env.OPERAFLOW_QUEUE_PREFIX ?? '';
  return { rollout: `${prefix}${TASK_QUEUES.rollout}`, train: `${prefix}${TASK_QUEUES.train}` };
}

export function planOf(config: RunConfig): RunPlan {
  const hb = Number(process.env.OPERAFLOW_HEARTBEAT_TIMEOUT ?? '');
  const queues = taskQueues();
  return {
    ...(queues.train !== TASK_QUEUES.train ? { taskQueues: queues } : {}),
    iterations: config.grpo.iterations,
    rolloutShards: config.runtime.rolloutShards,
    continueAsNewEvery: config.runtime.continueAsNewEvery,
    evalEvery: config.eval.every,
    maxStageAttempts: config.runtime.maxStageAttempts,
    ...(Number.isFinite(hb) && hb > 0 ? { heartbeatTimeoutMs: hb * 1000 } : {}),
  };
}

/** Paths in the config are relative to the directory `train` runs in; workers get absolute ones. */
function resolvePaths(config: RunConfig): RunConfig {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(p));
  const out: RunConfig = structuredClone(config);
  if (out.data.source !== 'synthetic') {
    out.data.source = abs(out.data.source);
    if (!existsSync(out.data.source)) throw new Error(`data.source: file not found: ${out.data.source}`);
  }
  if (out.model.checkpoint) out.model.checkpoint = abs(out.model.checkpoint);
  if (out.model.tokenizer !== 'byte') out.model.tokenizer = abs(out.model.tokenizer);
  if (out.coldStart.teacher.checkpoint) out.coldStart.teacher.checkpoint = abs(out.coldStart.teacher.checkpoint);
  out.runtime.artifactsDir = abs(out.runtime.artifactsDir);
  return out;
}

function newRunId(name: string): string {
  const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'run';
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${slug}-${stamp}-${Math.random().toString(36).slice(2, 6)}`;
}

async function startWorkflow(s: Services, runId: string, input: TrainingRunInput, reuse: boolean): Promise<WorkflowHandle<typeof trainingRun>> {
  return s.client.workflow.start(trainingRun, {
    taskQueue: taskQueues().train,
    workflowId: runId,
    args: [input],
    // A second `train --id` of a live run attaches to it; a closed run may be started again (resume).
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: reuse ? 'ALLOW_DUPLICATE' : 'REJECT_DUPLICATE',
  });
}

/** Limits that zod cannot see because they span sections: every sequence must fit the model's positions. */
function checkFits(config: RunConfig, file: string): void {
  const maxPositions = config.model.config?.max_position_embeddings ?? modelPresets[config.model.preset].max_position_embeddings;
  const problems: string[] = [];
  for (const [key, newTokens] of [['grpo.maxNewTokens', config.grpo.maxNewTokens], ['eval.maxNewTokens', config.eval.maxNewTokens]] as const) {
    // +1: the BOS token in front of every prompt.
    if (config.data.maxPromptTokens + 1 + newTokens > maxPositions) {
      problems.push(`${file}: ${key}: data.maxPromptTokens (${config.data.maxPromptTokens}) + 1 + ${key} (${newTokens}) exceeds the model's max_position_embeddings (${maxPositions}); lower them or raise model.config.max_position_embeddings`);
    }
  }
  if (config.grpo.promptsPerIteration < config.runtime.rolloutShards) {
    problems.push(`${file}: runtime.rolloutShards: ${config.runtime.rolloutShards} shards for ${config.grpo.promptsPerIteration} prompts per iteration would leave shards empty; use at most grpo.promptsPerIteration`);
  }
  if (problems.length) throw new Error(problems.join('\n'));
}

async function cmdTrain(args: Args): Promise<number> {
  const file = args.positional[0];
  if (!file) throw new UsageError('train needs a config file');
  const parsed = loadRunConfig(file);
  checkFits(parsed, file);
  const config = resolvePaths(parsed);
  const json = args.flags.has('json');
  const s = await connect();
  try {
    const requested = args.flags.get('id');
    const runId = typeof requested === 'string' ? requested : newRunId(config.name);
    const { run, created } = await createRun(s.db.db, {
      id: runId,
      name: config.name,
      status: 'pending',
      config: config as unknown as Record<string, unknown>,
      configHash: configHash(config),
      codeVersion: codeVersion(),
      seed: config.seed,
      workflowId: runId,
    });
    if (!created && run.configHash !== configHash(config)) {
      throw new Error(`run ${runId} exists with a different config (hash ${run.configHash.slice(0, 12)}); choose another --id`);
    }
    await startWorkflow(s, runId, { runId, plan: planOf(config) }, false).catch(async (err: Error) => {
      // REJECT_DUPLICATE: the run exists and its workflow has closed: attach to the result instead.
      if (created || !/already started|AlreadyStarted/i.test(err.message)) throw err;
    });
    await appendEvent(s.db.db, runId, created ? 'started' : 'attached', actor(), { config: file, configHash: run.configHash });
    (json ? console.error : console.log)(`${created ? 'started' : 'attached to'} run ${runId}`);
    if (!args.flags.has('wait')) {
      if (json) console.log(JSON.stringify(await runSummary(s.db.db, runId)));
      return 0;
    }
    const status = await waitForRun(s, runId, config, json);
    const summary = await runSummary(s.db.db, runId);
    if (!json || process.stderr.isTTY) printEvalComparison(summary, json ? console.error : console.log);
    if (json) console.log(JSON.stringify(summary));
    return status === 'completed' ? 0 : status === 'blocked' ? 2 : 1;
  } finally {
    await s.close();
  }
}

/**
 * Follows a run until its workflow closes or it blocks (an operator must act), with progress bars on a
 * terminal and a line per stage change otherwise. Progress comes from the database, which workers
 * update, so it works without a worker to answer queries.
 */
/** Items a compute activity heartbeats through (its `step` or `item` count), for the stage progress bar. */
function stageItems(config: RunConfig, activity: string): number | undefined {
  const perShard = Math.ceil(config.grpo.promptsPerIteration / config.runtime.rolloutShards);
  switch (activity) {
    case 'coldStartSft':
      return config.coldStart.steps;
    case 'rollout':
    case 'score':
      return perShard;
    case 'update':
      return config.grpo.epochs * Math.ceil((config.grpo.promptsPerIteration * config.grpo.groupSize) / config.grpo.miniBatchSize);
    case 'evaluate':
      return config.eval.prompts;
    default:
      return undefined;
  }
}

/** The most advanced heartbeat among the workflow's running activities: which stage, how far. */
function liveProgress(pending: { activityType?: { name?: string | null } | null; heartbeatDetails?: { payloads?: unknown[] | null } | null }[]) {
  let best: { activity: string; done: number } | undefined;
  for (const p of pending) {
    const payload = p.heartbeatDetails?.payloads?.[0];
    if (!payload) continue;
    let details: { step?: number; item?: number; done?: number } | undefined;
    try {
      details = defaultPayloadConverter.fromPayload(payload as Parameters<typeof defaultPayloadConverter.fromPayload>[0]);
    } catch {
      continue;
    }
    const done = details?.item ?? details?.step ?? details?.done;
    if (typeof done === 'number' && (!best || done > best.done)) best = { activity: p.activityType?.name ?? '?', done };
  }
  return best;
}

async function waitForRun(s: Services, runId: string, config: RunConfig, json: boolean): Promise<string> {
  const iterations = config.grpo.iterations;
  const out = (line: string) => (json ? console.error(line) : console.log(line));
  const tty = Boolean(process.stderr.isTTY);
  const bars = tty
    ? new cliProgress.MultiBar(
        { format: ' {bar} {value}/{total} {label}', hideCursor: true, clearOnComplete: false, stream: process.stderr },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const iterBar = bars?.create(Math.max(iterations, 1), 0, { label: 'iterations' });
  const stageBar = bars?.create(1, 0, { label: 'starting' });
  let lastLine = '';
  const handle = s.client.workflow.getHandle(runId);
  try {
    for (;;) {
      const run = await requireRun(s.db.db, runId);
      const running = await s.db.pool.query<{ stage: string; iteration: number; n: number; done: number }>(
        `select stage, iteration, count(distinct shard)::int as n,
                count(distinct shard) filter (where status = 'completed')::int as done
           from stage_attempts where run_id = $1
          group by stage, iteration order by max(started_at) desc limit 1`,
        [runId],
      );
      const cur = running.rows[0];
      const label = cur ? `${cur.stage} (iteration ${cur.iteration})` : 'waiting for a worker';
      iterBar?.update(run.currentIteration, { label: `iterations · ${run.status}` });
      if (cur) {
        stageBar?.setTotal(Math.max(cur.n, 1));
        stageBar?.update(cur.done, { label });
      }
      const line = `[${run.status}] iteration ${run.currentIteration}/${iterations} · ${label}${cur && cur.n > 1 ? ` ${cur.done}/${cur.n} shards` : ''}`;
      if (!tty && line !== lastLine) {
        console.error(line);
        lastLine = line;
      }
      if (run.status === 'blocked') {
        bars?.stop();
        out(`run ${runId} is blocked: ${run.error ?? 'unknown error'}\nfix the cause, then: operaflow retry ${runId}   (or: operaflow cancel ${runId})`);
        return 'blocked';
      }
      let closed = false;
      try {
        const d = await handle.describe();
        closed = d.status.name !== 'RUNNING';
        // Within a long stage: the heartbeat of its activity (SFT step, prompts sampled or scored, update step).
        const live = liveProgress(d.raw.pendingActivities ?? []);
        const total = live && stageItems(config, live.activity);
        if (stageBar && live && total) {
          stageBar.setTotal(total);
          stageBar.update(Math.min(live.done, total), { label: `${label} · ${live.activity} ${live.done}/${total}` });
        }
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
        closed = true;
      }
      if (closed) {
        const final = await requireRun(s.db.db, runId);
        iterBar?.update(final.currentIteration, { label: `iterations · ${final.status}` });
        bars?.stop();
        if (final.status !== 'completed') out(`run ${runId} ended ${final.status}${final.error ? `: ${final.error}` : ''}`);
        return final.status;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    bars?.stop();
  }
}

function printEvalComparison(summary: RunSummary, out: (line: string) => void): void {
  const before = summary.summary?.evalBefore as EvalResult | null | undefined;
  const after = summary.summary?.evalAfter as EvalResult | null | undefined;
  out(`run ${summary.id}: ${summary.status} after ${summary.currentIteration} iteration(s)`);
  if (!before || !after) return;
  const fmt = (v: number | null) => (v === null ? '   n/a' : v.toFixed(4).padStart(8));
  out(`evaluation on ${after.prompts} held-out prompts   before RL   after RL`);
  out(`  mean OPERA reward                 ${fmt(before.reward)}   ${fmt(after.reward)}`);
  out(`  relative likelihood (ppl score)   ${fmt(before.ppl)}   ${fmt(after.ppl)}`);
  out(`  reflection score                  ${fmt(before.reflection)}   ${fmt(after.reflection)}`);
  out(`  reference log-likelihood          ${fmt(before.refLogp)}   ${fmt(after.refLogp)}`);
  out(`  exact match (math)                ${fmt(before.exactMatch)}   ${fmt(after.exactMatch)}`);
}

// ------------------------------------------------------------------ worker

async function cmdWorker(args: Args): Promise<number> {
  const queuesFlag = args.flags.get('queues');
  const queues = (typeof queuesFlag === 'string' ? queuesFlag : 'rollout,train').split(',').map((q) => q.trim()).filter(Boolean);
  const known = Object.values(TASK_QUEUES) as string[];
  for (const q of queues) if (!known.includes(q)) throw new UsageError(`--queues: unknown queue "${q}" (known: ${known.join(', ')})`);
  const names = taskQueues();
  // Loaded here, not at the top: the engine (onnxruntime) and the worker SDK are heavy, other commands need neither.
  const { DefaultLogger, NativeConnection, Runtime, Worker } = await import('@temporalio/worker');
  const { createActivities } = require('../activities') as typeof import('../activities');
  // The SDK logs every bundling detail at INFO; operators need warnings and our own stage lines.
  Runtime.install({ logger: new DefaultLogger((process.env.OPERAFLOW_LOG_LEVEL as 'INFO' | undefined) ?? 'WARN') });
  const { databaseUrl, temporalAddress } = await endpoints();
  const db = createDb(databaseUrl);
  const identity = `${hostname()}:${process.pid}`;
  const connection = await NativeConnection.connect({ address: temporalAddress });
  const activities = createActivities({ db: db.db, worker: identity, log: (line) => console.error(`[${new Date().toISOString()}] ${line}`) });
  try {
    const workers = await Promise.all(
      queues.map((queue) =>
        Worker.create({
          connection,
          taskQueue: names[queue as keyof typeof names],
          identity,
          activities,
          // Compute activities hold the CPU (ORT blocks the event loop): one rollout shard at a time; the
          // train queue also serves the quick status writes, so it takes a few.
          maxConcurrentActivityTaskExecutions: queue === TASK_QUEUES.train ? 4 : 1,
          // Heartbeats reach the server every 2 s at most (not 0.8 × the timeout): `train --wait` shows them as progress.
          maxHeartbeatThrottleInterval: '2 seconds',
          ...(queue === TASK_QUEUES.train ? { workflowsPath: join(ROOT, 'workflows', 'index.ts') } : {}),
        }),
      ),
    );
    console.log(`operaflow worker ${identity} polling ${queues.map((q) => names[q as keyof typeof names]).join(',')} at ${temporalAddress}`);
    // SIGINT/SIGTERM shut the workers down gracefully (the SDK's Runtime installs those handlers).
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await connection.close();
    await db.close();
  }
  return 0;
}

// ------------------------------------------------------------------ inspection

async function cmdRuns(args: Args): Promise<number> {
  const s = await connect();
  try {
    const rows = await listRuns(s.db.db);
    if (args.flags.has('json')) {
      console.log(JSON.stringify(rows));
      return 0;
    }
    if (rows.length === 0) console.log('no runs yet: operaflow train configs/smoke.yaml --wait');
    for (const r of rows) {
      const total = (r.config as { grpo?: { iterations?: number } }).grpo?.iterations ?? '?';
      console.log(`${r.id.padEnd(48)} ${r.status.padEnd(10)} ${`${r.currentIteration}/${total}`.padEnd(7)} ${r.createdAt.toISOString()}`);
    }
    return 0;
  } finally {
    await s.close();
  }
}

async function cmdShow(args: Args): Promise<number> {
  const runId = args.positional[0];
  if (!runId) throw new UsageError('show needs a run id');
  const s = await connect();
  try {
    const summary = await runSummary(s.db.db, runId);
    if (args.flags.has('json')) {
      console.log(JSON.stringify(summary));
      return 0;
    }
    console.log(`run ${summary.id} (${summary.name ?? ''})  status ${summary.status}  iteration ${summary.currentIteration}`);
    console.log(`config ${summary.configHash.slice(0, 12)}  code ${summary.codeVersion.slice(0, 12)}  seed ${summary.seed}  created ${summary.createdAt}`);
    if (summary.error) console.log(`error: ${summary.error}`);
    console.log('stages:');
    for (const st of summary.stages) {
      const attempts = st.attempts
        .map((a) => `#${a.attempt} ${a.status}${a.durationMs !== null ? ` ${(a.durationMs / 1000).toFixed(1)}s` : ''}${a.worker ? ` @${a.worker}` : ''}${a.error ? ` (${a.error.slice(0, 120)})` : ''}`)
        .join('; ');
      console.log(`  ${`${st.stage} it${st.iteration}${st.stage === 'rollout' || st.stage === 'score' ? ` s${st.shard}` : ''}`.padEnd(22)} ${st.status.padEnd(10)} ${attempts}`);
    }
    console.log('latest metrics:');
    for (const [name, m] of Object.entries(summary.metrics)) console.log(`  ${name.padEnd(28)} ${m.value.toFixed(5).padStart(12)}  (step ${m.step})`);
    console.log(`rows: ${summary.counts.samples} samples, ${summary.counts.metrics} metrics, ${summary.counts.artifacts} artifacts, ${summary.counts.stageAttempts} stage attempts`);
    if (await workflowRunning(s, runId)) {
      // The workflow's own view (answered by a worker; skipped if none answers within a few seconds).
      const progress = await Promise.race([
        s.client.workflow.getHandle(runId).query(progressQuery).catch(() => undefined),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000).unref()),
      ]);
      if (progress) {
        const blocked = progress.blocked.map((b) => `${b.stage} it${b.iteration} s${b.shard}: ${b.error}`).join('; ');
        console.log(`live: ${progress.status} · ${progress.stage} iteration ${progress.iteration}/${progress.iterations} · ${progress.shardsDone}/${progress.shards} shards${progress.ema !== null ? ` · ema ${progress.ema.toFixed(4)}` : ''}${blocked ? ` · blocked on ${blocked}` : ''}`);
      }
    }
    printEvalComparison(summary, console.log);
    return 0;
  } finally {
    await s.close();
  }
}

// ------------------------------------------------------------------ operator signals

async function workflowRunning(s: Services, runId: string): Promise<boolean> {
  try {
    return (await s.client.workflow.getHandle(runId).describe()).status.name === 'RUNNING';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/** The state a continuation of `run` starts from: its last completed iteration (or none: from the start). */
async function continuationState(s: Services, run: Run): Promise<RunState | undefined> {
  const db = s.db.db;
  const dataset = (await completedStageOutput(db, { runId: run.id, stage: 'prepareDataset', iteration: 0, shard: 0 }))?.output as DatasetRef | undefined;
  const sft = (await completedStageOutput(db, { runId: run.id, stage: 'coldStartSft', iteration: 0, shard: 0 }))?.output as SftOutput | undefined;
  const evalBefore = (await completedStageOutput(db, { runId: run.id, stage: 'evaluate', iteration: 0, shard: 0 }))?.output as EvalResult | undefined;
  if (!dataset || !sft || !evalBefore) return undefined;
  const last = await lastCompletedUpdate(db, run.id);
  const upd = last?.output as UpdateOutput | undefined;
  const reference: CheckpointRef = sft.checkpoint;
  let evalLatest: EvalResult = evalBefore;
  if (last) {
    const e = (await completedStageOutput(db, { runId: run.id, stage: 'evaluate', iteration: last.iteration, shard: 0 }))?.output as EvalResult | undefined;
    if (e) evalLatest = e;
  }
  return {
    iteration: last?.iteration ?? 0,
    dataset,
    reference,
    checkpoint: upd?.checkpoint ?? reference,
    optimizer: upd?.optimizer ?? null,
    ema: upd?.ema ?? null,
    dataPosition: upd?.dataPosition ?? 0,
    evalBefore,
    evalLatest,
  };
}

async function cmdSignal(command: 'pause' | 'resume' | 'cancel' | 'retry', args: Args): Promise<number> {
  const runId = args.positional[0];
  if (!runId) throw new UsageError(`${command} needs a run id`);
  const s = await connect();
  try {
    const run = await requireRun(s.db.db, runId);
    let live = await workflowRunning(s, runId);
    // The workflow records a terminal status just before it closes: give it a moment to finish closing.
    for (let i = 0; live && TERMINAL_STATUSES.includes(run.status) && i < 40; i++) {
      await new Promise((r) => setTimeout(r, 250));
      live = await workflowRunning(s, runId);
    }
    const handle = s.client.workflow.getHandle(runId);
    const who = actor();
    if (command === 'resume' && !live) {
      if (run.status === 'completed') throw new Error(`run ${runId} has completed; nothing to resume`);
      const config = runConfigSchema.parse(run.config);
      const state = await continuationState(s, run);
      await setRunStatus(s.db.db, runId, { status: 'pending', error: null, finished: false });
      await startWorkflow(s, runId, { runId, plan: planOf(config), ...(state ? { state } : {}) }, true);
      await appendEvent(s.db.db, runId, 'resumed', who, { fromIteration: state?.iteration ?? null, previousStatus: run.status });
      console.log(`resumed run ${runId} from ${state ? `iteration ${state.iteration}` : 'the start'}`);
      return 0;
    }
    if (!live) {
      if (command === 'cancel' && !TERMINAL_STATUSES.includes(run.status)) {
        await setRunStatus(s.db.db, runId, { status: 'cancelled', finished: true });
        await appendEvent(s.db.db, runId, 'cancelled', who, { note: 'no live workflow' });
        console.log(`cancelled run ${runId}`);
        return 0;
      }
      throw new Error(`run ${runId} is ${run.status} and its workflow is not running${command === 'retry' ? ` (use: operaflow resume ${runId})` : ''}`);
    }
    if (command === 'retry' && run.status !== 'blocked') throw new Error(`run ${runId} is ${run.status}, not blocked: nothing to retry`);
    const signal = { pause: pauseSignal, resume: resumeSignal, cancel: cancelSignal, retry: retryStageSignal }[command];
    if (signal === cancelSignal) await handle.signal(cancelSignal, { reason: `by ${who}` });
    else await handle.signal(signal as typeof pauseSignal);
    const type = { pause: 'paused', resume: 'resumed', cancel: 'cancelled', retry: 'retried' }[command];
    await appendEvent(s.db.db, runId, type, who, { previousStatus: run.status, ...(command === 'retry' ? { error: run.error } : {}) });
    console.log(`${command} sent to run ${runId}`);
    return 0;
  } finally {
    await s.close();
  }
}

// ------------------------------------------------------------------ main

export async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  const args = parseArgs(rest, ['queues', 'id']);
  let code: number;
  try {
    switch (command) {
      case 'train':
        code = await cmdTrain(args);
        break;
      case 'worker':
        code = await cmdWorker(args);
        break;
      case 'runs':
        code = await cmdRuns(args);
        break;
      case 'show':
        code = await cmdShow(args);
        break;
      case 'pause':
      case 'resume':
      case 'cancel':
      case 'retry':
        code = await cmdSignal(command, args);
        break;
      case undefined:
      case 'help':
      case '--help':
        console.log(USAGE);
        code = command ? 0 : 1;
        break;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n${USAGE}`);
      process.exit(64);
    }
    throw err;
  }
  process.exit(code);
}

/** Entry point for both `tsx scripts/operaflow.ts` and the `operaflow` bin shim (scripts/operaflow.js). */
export function cli(): void {
  main().catch((err: Error) => {
    console.error(err.message);
    process.exit(1);
  });
}

if (require.main === module) cli();
