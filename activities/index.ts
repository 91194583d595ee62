/**
 * The activities of `trainingRun`, from one factory so their dependencies (database, worker identity)
 * are explicit. Each is a thin adapter: load its inputs (config from the runs row, tensors and rollouts
 * from the artifact store) → call opera/ or engine/ → persist outputs (artifact store + rows).
 *
 * Idempotent per (run, stage, iteration, shard): an activity whose stage already completed returns the
 * recorded output; every write is an upsert. Long ones heartbeat `{ item }` (or `{ step }`) and resume
 * from `activityInfo().heartbeatDetails` after a worker crash, reading the finished items back from a
 * partial log. Randomness is keyed by (seed, iteration, prompt, sample, token), so a retried stage
 * produces what the first attempt would have.
 */
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ApplicationFailure, CancelledFailure, Context, activityInfo } from '@temporalio/activity';
import type { Db } from '../db/client';
import {
  appendEvent,
  completedStageOutput,
  finishStageAttempt,
  getArtifact,
  recordedRunState,
  requireRun,
  setRunStatus,
  startStageAttempt,
  upsertMetrics,
  upsertSamples,
  type RunStatusUpdate,
  type StageKey,
} from '../db/queries';
import type { NewSample } from '../db/schema';
import { LlamaModel, initWeights, type Weights } from '../engine/model';
import type { LlamaConfig } from '../engine/config';
import type { Tokenizer } from '../engine/tokenizer';
import { loadCheckpoint, saveCheckpoint, type Checkpoint } from '../engine/checkpoint';
import { sample } from '../engine/sampler';
import { Trainer } from '../engine/trainer';
import { runConfigSchema, type RunConfig } from '../opera/config';
import { prepareDataset as prepareOperaDataset, type DatasetRow } from '../opera/dataset';
import { grpoAdvantages } from '../opera/grpo';
import { operaRewards, type OperaGroup } from '../opera/reward';
import { applyStops, synthesizeRows, type TeacherGenerator } from '../opera/coldstart';
import { coldStartSet, type SftRow } from '../opera/synthetic';
import {
  getTokenizer,
  inferenceModel,
  loadCheckpointChecked,
  modelConfigFor,
  permutation,
  promptTokens,
  saveCheckpointRecorded,
  scoreResponses,
  verifyCheckpointFiles,
  fileHashes,
  warmupLr,
  type ScoredResponse,
} from './engine';
import { PartialLog, getJson, putJson } from './store';
import type {
  DatasetRef,
  EvalResult,
  EvaluateInput,
  RewardInput,
  RewardOutput,
  RolloutInput,
  RolloutOutput,
  RunState,
  ScoreInput,
  ScoreOutput,
  SftOutput,
  StageInput,
  UpdateInput,
  UpdateOutput,
} from './types';

export interface ActivityDeps {
  db: Db;
  /** Who ran an attempt (stage_attempts.worker): host:pid by default. */
  worker: string;
  log?: (line: string) => void;
}

/** What the dataset artifact holds. */
interface DatasetFile {
  hash: string;
  train: DatasetRow[];
  eval: DatasetRow[];
}

interface RolloutSample {
  tokens: number[];
  text: string;
  logps: number[];
  finish: string;
}
interface RolloutItem {
  /** Position in the iteration's batch (0..promptsPerIteration-1); groups are keyed by it. */
  index: number;
  promptId: string;
  prompt: string;
  reference: string;
  taskType: string;
  promptTokens: number[];
  samples: RolloutSample[];
}
interface ScoredItem extends RolloutItem {
  scores: ScoredResponse[];
}
/** Heartbeat details of a training stage: its step, and the last partial checkpoint with its file hashes. */
interface PartialProgress {
  step: number;
  partialStep?: number;
  partialFiles?: Record<string, string>;
}
interface RewardFile {
  sequences: { promptTokens: number[]; tokens: number[]; advantage: number }[];
}

const pad = (n: number) => String(n).padStart(4, '0');

/** Errors that retrying cannot fix: bad input data, a diverged (NaN) loss. */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

/** A readable message: drizzle's "Failed query: <sql> params: <every value>" is reduced to the server's reason. */
function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.message.startsWith('Failed query:') && err.cause instanceof Error) return `database write failed: ${err.cause.message}`;
  return err.message;
}

function toFailure(err: unknown): unknown {
  if (err instanceof PermanentError) return ApplicationFailure.nonRetryable(err.message, err.name);
  return err;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

export function createActivities(deps: ActivityDeps) {
  const { db, worker } = deps;
  const configs = new Map<string, RunConfig>();
  const datasets = new Map<string, Promise<DatasetFile>>();

  async function runConfig(runId: string): Promise<RunConfig> {
    let c = configs.get(runId);
    if (!c) {
      const run = await requireRun(db, runId);
      c = runConfigSchema.parse(run.config);
      configs.set(runId, c);
    }
    return c;
  }

  const runDir = (config: RunConfig, runId: string) => resolve(config.runtime.artifactsDir, runId);

  function loadDataset(ref: DatasetRef): Promise<DatasetFile> {
    let d = datasets.get(ref.artifact.sha256);
    if (!d) {
      d = getJson<DatasetFile>(ref.artifact);
      datasets.set(ref.artifact.sha256, d);
      d.catch(() => datasets.delete(ref.artifact.sha256));
    }
    return d;
  }

  /** The latest details per running activity, re-sent by the keep-alive in `stage`. */
  const lastDetails = new WeakMap<Context, unknown>();

  function heartbeat(details: Record<string, unknown>): void {
    const ctx = Context.current();
    lastDetails.set(ctx, details);
    ctx.heartbeat(details);
    if (ctx.cancellationSignal.aborted) throw new CancelledFailure('activity cancelled');
  }

  /** Heartbeat details of the previous attempt (after a crash), if any. */
  function resumeDetails<T>(): T | undefined {
    return activityInfo().heartbeatDetails as T | undefined;
  }

  /** One line about what this attempt does with the previous attempt's progress. */
  function logResume(what: string): void {
    const info = activityInfo();
    deps.log?.(`${info.activityType} attempt ${info.attempt}: ${what}`);
  }

  /**
   * Where a long training stage (SFT, update) restarts after a crash: the partial checkpoint named by the
   * previous attempt's last heartbeat, verified against the hashes that heartbeat recorded. Anything
   * unusable (no partial saved yet, a file missing or changed, a different config) means step 0, and the
   * log says which and why.
   */
  async function resumePartial(partialDir: (step: number) => string, config: LlamaConfig): Promise<{ step: number; checkpoint: Checkpoint } | undefined> {
    const resumed = resumeDetails<PartialProgress>();
    if (resumed === undefined) return undefined;
    if (resumed.partialStep === undefined || resumed.partialFiles === undefined) {
      logResume(`the previous attempt reached step ${resumed.step} but saved no partial checkpoint: restarting from step 0`);
      return undefined;
    }
    const dir = partialDir(resumed.partialStep);
    try {
      await verifyCheckpointFiles(dir, resumed.partialFiles);
      const checkpoint = await loadCheckpoint(dir, config);
      if (!checkpoint.optimizer) throw new Error('it has no optimizer state');
      if (Number(checkpoint.extra?.step) !== resumed.partialStep) throw new Error(`its trainer state says step ${String(checkpoint.extra?.step)}`);
      logResume(`resumes from the partial checkpoint at step ${resumed.partialStep} (the previous attempt reached step ${resumed.step})`);
      return { step: resumed.partialStep, checkpoint };
    } catch (err) {
      logResume(`the partial checkpoint at step ${resumed.partialStep} is unusable (${(err as Error).message}): restarting from step 0`);
      return undefined;
    }
  }

  /**
   * Saves a partial checkpoint and returns the heartbeat details that point a later attempt at it. The
   * previous partial is kept (the heartbeat naming this one may never reach the server); older ones go.
   */
  async function savePartial(partialDir: (step: number) => string, step: number, previous: PartialProgress | undefined, every: number, ckpt: Checkpoint): Promise<PartialProgress> {
    const files = await saveCheckpoint(partialDir(step), ckpt);
    if (previous?.partialStep !== undefined && previous.partialStep - every > 0) await rm(partialDir(previous.partialStep - every), { recursive: true, force: true });
    return { step, partialStep: step, partialFiles: fileHashes(files) };
  }

  /**
   * The partial log of this attempt of a sharded stage, holding the items a previous attempt finished
   * (as many as its last heartbeat reported). One file per attempt: an attempt presumed dead may still
   * be running, and two writers must never share a file.
   */
  async function openPartialLog<T>(dir: string, shard: number) {
    const info = activityInfo();
    const log = new PartialLog<T>(join(dir, `shard-${shard}.attempt-${info.attempt}.partial.jsonl`));
    const resumed = resumeDetails<{ item: number; log?: string }>();
    const previous = resumed?.log && resumed.log !== log.name ? new PartialLog<T>(join(dir, resumed.log)) : undefined;
    const items = previous && resumed ? await previous.read(resumed.item) : [];
    await log.reset(items);
    return { log, previous, items, done: items };
  }

  /**
   * Runs a stage once: returns the recorded output if an attempt already completed, otherwise records
   * the attempt (worker, timing, output or error) around `body`.
   */
  async function stage<T>(key: StageKey, body: () => Promise<T>): Promise<T> {
    const done = await completedStageOutput(db, key);
    if (done) return done.output as T;
    const attempt = await startStageAttempt(db, key, worker);
    deps.log?.(`${key.runId} ${key.stage} iteration ${key.iteration} shard ${key.shard}: attempt ${attempt.attempt}`);
    // Keep-alive: a long engine call between two progress heartbeats (a whole batch of generations) must
    // not look like a dead worker. The engine yields between forwards, so this timer gets to run; it
    // repeats the latest details (or the previous attempt's, so a resume point is never overwritten).
    const ctx = Context.current();
    const keepAlive = setInterval(() => ctx.heartbeat(lastDetails.get(ctx) ?? ctx.info.heartbeatDetails), 1000);
    try {
      const output = await body();
      await finishStageAttempt(db, attempt.id, { status: 'completed', output });
      return output;
    } catch (err) {
      const message = describeError(err);
      await finishStageAttempt(db, attempt.id, { status: 'failed', error: message }).catch(() => {});
      if (err instanceof Error && err.message !== message) throw new Error(message, { cause: err });
      throw toFailure(err);
    } finally {
      clearInterval(keepAlive);
    }
  }

  // ------------------------------------------------------------------ short (database) activities

  async function setStatus(runId: string, update: RunStatusUpdate): Promise<void> {
    await setRunStatus(db, runId, update);
  }

  async function recordEvent(runId: string, type: string, actor: string, detail?: Record<string, unknown>): Promise<void> {
    await appendEvent(db, runId, type, actor, detail);
  }

  /** null (not undefined) when nothing is recorded: Temporal payloads cannot carry undefined. */
  async function recordedState(runId: string): Promise<RunState | null> {
    return (await recordedRunState(db, runId)) ?? null;
  }

  // ------------------------------------------------------------------ stages

  async function prepareDataset(input: StageInput): Promise<DatasetRef> {
    const { runId, iteration } = input;
    return stage({ runId, stage: 'prepareDataset', iteration, shard: 0 }, async () => {
      const config = await runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer);
      let prepared: Awaited<ReturnType<typeof prepareOperaDataset>>;
      try {
        prepared = await prepareOperaDataset(config.data, config.seed, { promptTokens: (p) => promptTokens(tok, p).length });
      } catch (err) {
        // The data itself is wrong (a bad row, a missing file): retrying cannot fix that, an operator can.
        throw new PermanentError(err instanceof Error ? err.message : String(err));
      }
      if (prepared.train.length === 0) throw new PermanentError(`dataset ${config.data.source}: no training rows`);
      if (prepared.eval.length === 0) throw new PermanentError(`dataset ${config.data.source}: no evaluation rows (raise data.evalFraction)`);
      const file: DatasetFile = { hash: prepared.hash, train: prepared.train, eval: prepared.eval };
      const artifact = await putJson(db, { runId, kind: 'dataset', iteration: 0, name: 'dataset.json' }, join(runDir(config, runId), 'dataset.json'), file);
      await upsertMetrics(db, runId, 0, {
        'data/train_rows': prepared.counts.train,
        'data/eval_rows': prepared.counts.eval,
        'data/duplicates': prepared.counts.duplicates,
        'data/too_long': prepared.counts.tooLong,
      });
      return { artifact, hash: prepared.hash, train: prepared.train.length, eval: prepared.eval.length };
    });
  }

  async function coldStartSft(input: StageInput & { dataset: DatasetRef }): Promise<SftOutput> {
    const { runId, iteration } = input;
    return stage({ runId, stage: 'coldStartSft', iteration, shard: 0 }, async () => {
      const config = await runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer);
      const modelConfig = modelConfigFor(config, tok);
      const weights = config.model.checkpoint ? (await loadCheckpoint(config.model.checkpoint, modelConfig)).weights : initWeights(modelConfig, config.seed);
      const model = new LlamaModel(modelConfig, weights, { providers: config.runtime.providers });
      const cs = config.coldStart;
      let steps = 0;
      let finalLoss: number | null = null;
      if (cs.enabled && cs.steps > 0) {
        const data = await loadDataset(input.dataset);
        const sft = cs.synthesize ? await synthesizeColdStart(config, runId, data, tok, modelConfig, weights) : coldStartSet(data.train, config.seed);
        if (sft.length === 0) throw new PermanentError('cold start: the dataset yields no SFT examples');
        const examples = sft.map((ex) => {
          const p = promptTokens(tok, ex.prompt);
          const r = [...tok.encode(ex.response), tok.eosId];
          return { tokens: [...p, ...r], lossMask: [...p.map(() => 0), ...r.map(() => 1)] };
        });
        // Every `every` steps the weights and optimizer are saved to a partial checkpoint and its step
        // heartbeated: a retry after a crash continues from there (batches and lr depend on the step only).
        const every = Math.max(10, Math.ceil(cs.steps / 4));
        // One directory per saved step: the last heartbeat that reached the server may name an older one.
        const partialDir = (n: number) => join(runDir(config, runId), 'checkpoints', 'sft-partial', `step-${pad(n)}`);
        let trainer = new Trainer(model, { weightDecay: cs.weightDecay });
        const resumed = await resumePartial(partialDir, modelConfig);
        if (resumed) {
          model.setWeights(resumed.checkpoint.weights);
          trainer = new Trainer(model, { weightDecay: cs.weightDecay }, resumed.checkpoint.optimizer);
        }
        const start = resumed?.step ?? 0;
        let progress: PartialProgress | undefined = resumed ? activityInfo().heartbeatDetails as PartialProgress : undefined;
        const order = permutation(examples.length, config.seed ^ 0x5f7);
        for (let step = start; step < cs.steps; step++) {
          const batch = Array.from({ length: Math.min(cs.batchSize, examples.length) }, (_, k) => examples[order[(step * cs.batchSize + k) % examples.length]!]!);
          const out = await trainer.sftStep(batch, warmupLr(cs.lr, cs.warmupSteps, step));
          if (!Number.isFinite(out.loss)) throw new PermanentError(`cold-start SFT: loss is ${out.loss} at step ${step} (lower coldStart.lr)`);
          finalLoss = out.loss;
          if (step % 5 === 0 || step === cs.steps - 1) await upsertMetrics(db, runId, step, { 'sft/loss': out.loss, 'sft/grad_norm': out.gradNorm });
          if ((step + 1) % every === 0 && step + 1 < cs.steps) {
            progress = await savePartial(partialDir, step + 1, progress, every, { config: modelConfig, weights: model.weights, optimizer: trainer.state(), extra: { step: step + 1 } });
          }
          heartbeat({ ...progress, step: step + 1 });
        }
        steps = cs.steps;
      }
      const { checkpoint } = await saveCheckpointRecorded(db, runId, 0, join(runDir(config, runId), 'checkpoints', `iter-${pad(0)}`), {
        config: modelConfig,
        weights: model.weights,
        extra: { iteration: 0, stage: 'coldStartSft', steps, ema: null, dataPosition: 0 },
      });
      return { checkpoint, steps, finalLoss };
    });
  }

  /**
   * Cold-start synthesis (OPERA.md): the teacher writes each training prompt's reasoning step by step
   * (opera/coldstart.ts). Resumable per prompt: finished rows go to a per-attempt partial log named in
   * the heartbeat, and the finished set is an artifact that a retried SFT reuses.
   */
  async function synthesizeColdStart(
    config: RunConfig,
    runId: string,
    data: DatasetFile,
    tok: Tokenizer,
    modelConfig: LlamaConfig,
    initialWeights: Weights,
  ): Promise<SftRow[]> {
    const key = { runId, kind: 'coldstart', iteration: 0, name: 'sft.json' };
    const recorded = await getArtifact(db, key);
    if (recorded) return getJson<SftRow[]>(recorded);
    const t = config.coldStart.teacher;
    const teacher = t.checkpoint
      ? await loadCheckpoint(t.checkpoint).then((c) => new LlamaModel(c.config, c.weights, { providers: config.runtime.providers }))
      : new LlamaModel(modelConfig, initialWeights, { providers: config.runtime.providers });
    const maxPositions = teacher.config.max_position_embeddings;
    const gen: TeacherGenerator = {
      async generate(context, opts) {
        const prompt = promptTokens(tok, context);
        const budget = Math.min(opts.maxNewTokens, maxPositions - prompt.length);
        // A context that fills the model's positions ends the step empty (the trace cannot grow further).
        if (budget <= 0) return { text: '', stoppedBy: null, logps: [] };
        // Stops are applied here, not by the sampler, because synthesis must know which one matched.
        const [r] = await sample(teacher, tok, [{ prompt, key: opts.key }], {
          temperature: opts.temperature,
          topK: opts.topK,
          topP: opts.topP,
          maxNewTokens: budget,
          seed: config.seed,
        });
        const cut = applyStops(r!.text, opts.stop);
        return { ...cut, logps: r!.logps.slice(0, tok.encode(cut.text).length) };
      },
      async contextLogps(text) {
        const tokens = promptTokens(tok, text);
        if (tokens.length < 3) return [];
        const [logps] = await teacher.tokenLogps([{ tokens, start: 2 }]);
        return logps!;
      },
    };
    const dir = join(runDir(config, runId), 'coldstart');
    const { log, previous, items } = await openPartialLog<SftRow>(dir, 0);
    const options = { temperature: t.temperature, topP: t.topP, topK: t.topK, candidates: t.candidates, maxReflections: t.maxReflections, maxStepTokens: t.maxStepTokens };
    for await (const row of synthesizeRows(data.train, gen, options, [config.seed], new Set(items.map((i) => i.id)))) {
      const item: SftRow = { id: row.id, prompt: row.prompt, response: row.output };
      items.push(item);
      await log.append(item);
      heartbeat({ item: items.length, log: log.name });
    }
    await putJson(db, key, join(dir, 'sft.json'), items);
    await upsertMetrics(db, runId, 0, { 'coldstart/rows': items.length });
    await log.remove();
    await previous?.remove();
    return items;
  }

  /** The prompts of iteration `i`'s batch that belong to `shard` (round-robin), with their batch index. */
  function batchPrompts(data: DatasetFile, config: RunConfig, dataPosition: number, shard: number, shards: number) {
    const out: { index: number; row: DatasetRow }[] = [];
    for (let k = shard; k < config.grpo.promptsPerIteration; k += shards) {
      out.push({ index: k, row: data.train[(dataPosition + k) % data.train.length]! });
    }
    return out;
  }

  async function rollout(input: RolloutInput): Promise<RolloutOutput> {
    const { runId, iteration, shard } = input;
    return stage({ runId, stage: 'rollout', iteration, shard }, async () => {
      const config = await runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer);
      const model = await inferenceModel(input.checkpoint, config.runtime.providers);
      const data = await loadDataset(input.dataset);
      const prompts = batchPrompts(data, config, input.dataPosition, shard, input.shards);
      const dir = join(runDir(config, runId), 'rollouts', `iter-${pad(iteration)}`);
      const { log, previous, items } = await openPartialLog<RolloutItem>(dir, shard);
      const g = config.grpo;
      for (const { index, row } of prompts.slice(items.length)) {
        const p = promptTokens(tok, row.prompt);
        const requests = Array.from({ length: g.groupSize }, (_, j) => ({ prompt: p, key: [iteration, input.dataPosition + index, j] }));
        const results = await sample(model, tok, requests, {
          temperature: g.temperature,
          topK: g.topK,
          topP: g.topP,
          maxNewTokens: g.maxNewTokens,
          seed: config.seed,
        });
        const item: RolloutItem = {
          index,
          promptId: row.id,
          prompt: row.prompt,
          reference: row.reference,
          taskType: row.taskType,
          promptTokens: p,
          samples: results.map((r) => ({ tokens: r.tokens, text: r.text, logps: r.logps, finish: r.finish })),
        };
        items.push(item);
        await log.append(item);
        heartbeat({ item: items.length, log: log.name });
      }
      const artifact = await putJson(db, { runId, kind: 'rollouts', iteration, name: `shard-${shard}.json` }, join(dir, `shard-${shard}.json`), { iteration, shard, items });
      await log.remove();
      await previous?.remove();
      const lengths = items.flatMap((it) => it.samples.map((s) => s.tokens.length));
      return { artifact, prompts: items.length, samples: lengths.length, meanResponseTokens: mean(lengths) };
    });
  }

  async function score(input: ScoreInput): Promise<ScoreOutput> {
    const { runId, iteration, shard } = input;
    return stage({ runId, stage: 'score', iteration, shard }, async () => {
      const config = await runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer);
      const model = await inferenceModel(input.checkpoint, config.runtime.providers);
      const { items } = await getJson<{ items: RolloutItem[] }>(input.rollout.artifact);
      const dir = join(runDir(config, runId), 'scores', `iter-${pad(iteration)}`);
      const { log, previous, done } = await openPartialLog<ScoredResponse[]>(dir, shard);
      for (const item of items.slice(done.length)) {
        const scores = await scoreResponses(
          model,
          tok,
          item.samples.map((s) => ({ prompt: item.prompt, reference: item.reference, response: s.text })),
        );
        done.push(scores);
        await log.append(scores);
        heartbeat({ item: done.length, log: log.name });
      }
      const scored: ScoredItem[] = items.map((item, k) => ({ ...item, scores: done[k]! }));
      const artifact = await putJson(db, { runId, kind: 'scores', iteration, name: `shard-${shard}.json` }, join(dir, `shard-${shard}.json`), { iteration, shard, items: scored });
      await log.remove();
      await previous?.remove();
      return { artifact, samples: scored.reduce((n, it) => n + it.samples.length, 0) };
    });
  }

  async function reward(input: RewardInput): Promise<RewardOutput> {
    const { runId, iteration } = input;
    return stage({ runId, stage: 'reward', iteration, shard: 0 }, async () => {
      const config = await runConfig(runId);
      const shards = await Promise.all(input.scores.map((s) => getJson<{ items: ScoredItem[] }>(s.artifact)));
      const items = shards.flatMap((s) => s.items).sort((a, b) => a.index - b.index);
      const groups: OperaGroup[] = items.map((item) => ({
        taskType: item.taskType,
        reference: item.reference,
        rollouts: item.samples.map((s, j) => ({ response: s.text, ...item.scores[j]! })),
      }));
      const { rewards, ema } = operaRewards(groups, input.ema, config.reward);
      const flat = rewards.flatMap((group, gi) => group.map((r, j) => ({ r, gi, j })));
      const advantages = grpoAdvantages(
        flat.map((f) => f.r.total),
        flat.map((f) => f.gi),
      );
      const rows: NewSample[] = flat.map(({ r, gi, j }, k) => {
        const item = items[gi]!;
        const s = item.scores[j]!;
        return {
          runId,
          split: 'train',
          iteration,
          promptId: item.promptId,
          sampleIndex: j,
          prompt: item.prompt,
          reference: item.reference,
          taskType: item.taskType,
          response: item.samples[j]!.text,
          responseTokens: item.samples[j]!.tokens.length,
          reward: r.total,
          ppl: r.ppl,
          reflection: r.reflection,
          reflectionCount: r.reflectionCount,
          correct: r.correct ?? null,
          advantage: advantages[k]!,
          logpFull: s.logpFull,
          logpInitial: s.logpInitial,
          logpSegments: s.logpSegments,
        };
      });
      await upsertSamples(db, rows);
      const totals = flat.map((f) => f.r.total);
      const m = mean(totals);
      const math = flat.filter((f) => items[f.gi]!.taskType === 'math');
      const metrics: Record<string, number> = {
        'reward/mean': m,
        'reward/std': Math.sqrt(mean(totals.map((t) => (t - m) ** 2))),
        'reward/ppl': mean(flat.map((f) => f.r.ppl)),
        'reward/reflection': mean(flat.map((f) => f.r.reflection)),
        'reward/reflection_count': mean(flat.map((f) => f.r.reflectionCount)),
        'reward/logp_full': mean(rows.map((r) => r.logpFull ?? 0)),
        'rollout/response_tokens': mean(items.flatMap((it) => it.samples.map((s) => s.tokens.length))),
      };
      if (ema !== null) metrics['reward/ema'] = ema;
      if (math.length > 0) metrics['reward/math_accuracy'] = mean(math.map((f) => (f.r.correct ? 1 : 0)));
      await upsertMetrics(db, runId, iteration, metrics);
      const file: RewardFile = {
        sequences: flat.map(({ gi, j }, k) => ({ promptTokens: items[gi]!.promptTokens, tokens: items[gi]!.samples[j]!.tokens, advantage: advantages[k]! })),
      };
      const artifact = await putJson(
        db,
        { runId, kind: 'rewards', iteration, name: 'batch.json' },
        join(runDir(config, runId), 'rewards', `iter-${pad(iteration)}`, 'batch.json'),
        file,
      );
      return { artifact, ema, metrics };
    });
  }

  async function update(input: UpdateInput): Promise<UpdateOutput> {
    const { runId, iteration } = input;
    return stage({ runId, stage: 'update', iteration, shard: 0 }, async () => {
      const config = await runConfig(runId);
      const g = config.grpo;
      const { sequences } = await getJson<RewardFile>(input.rewards.artifact);
      // A fresh copy of the policy: training mutates weights, the cached inference model must not change.
      const ckpt = await loadCheckpointChecked(input.checkpoint);
      const model = new LlamaModel(ckpt.config, ckpt.weights, { providers: config.runtime.providers });
      const reference = await inferenceModel(input.reference, config.runtime.providers);
      const seqs = sequences.map((s) => ({ tokens: [...s.promptTokens, ...s.tokens], start: s.promptTokens.length }));
      const usable = seqs.map((s, k) => ({ s, k })).filter(({ s }) => s.tokens.length > s.start);
      const oldLogp = await model.tokenLogps(usable.map(({ s }) => s));
      const refLogp = await reference.tokenLogps(usable.map(({ s }) => s));
      let trainer = new Trainer(model, {}, ckpt.optimizer);
      let stats = { loss: [] as number[], pgLoss: [] as number[], klLoss: [] as number[], clipFraction: [] as number[], gradNorm: [] as number[] };
      // Partial checkpoints (weights, AdamW state, stats so far) about four times per update: a retry
      // after a crash skips the mini-batches already applied. Old and reference log-probs above come
      // from the input checkpoints, so they are the same either way; the mini-batch order is seeded.
      const totalSteps = g.epochs * Math.ceil(usable.length / g.miniBatchSize);
      const every = Math.max(1, Math.ceil(totalSteps / 4));
      const partialDir = (n: number) => join(runDir(config, runId), 'checkpoints', 'update-partial', `iter-${pad(iteration)}`, `step-${pad(n)}`);
      const resumed = await resumePartial(partialDir, ckpt.config);
      if (resumed) {
        model.setWeights(resumed.checkpoint.weights);
        trainer = new Trainer(model, {}, resumed.checkpoint.optimizer);
        stats = resumed.checkpoint.extra?.stats as typeof stats;
      }
      const startStep = resumed?.step ?? 0;
      let progress: PartialProgress | undefined = resumed ? activityInfo().heartbeatDetails as PartialProgress : undefined;
      let lr = g.lr;
      let step = 0;
      for (let epoch = 0; epoch < g.epochs; epoch++) {
        const order = permutation(usable.length, (config.seed ^ (iteration * 7919) ^ (epoch * 104729)) >>> 0);
        for (let b = 0; b < order.length; b += g.miniBatchSize) {
          if (step < startStep) {
            step++;
            continue;
          }
          const batch = order.slice(b, b + g.miniBatchSize).map((u) => {
            const { s, k } = usable[u]!;
            return { tokens: s.tokens, responseStart: s.start, advantage: sequences[k]!.advantage, oldLogp: oldLogp[u]!, refLogp: refLogp[u]! };
          });
          lr = warmupLr(g.lr, g.warmupSteps, trainer.state().step);
          const out = await trainer.grpoStep(batch, lr, {
            clip: g.clip,
            clipLow: g.clipLow,
            clipHigh: g.clipHigh,
            dualClip: g.dualClip,
            klCoef: g.klCoef,
            aggregation: g.aggregation,
          });
          if (!Number.isFinite(out.loss) || !Number.isFinite(out.gradNorm)) {
            throw new PermanentError(`update: loss ${out.loss}, grad norm ${out.gradNorm} at iteration ${iteration} step ${step} (diverged; lower grpo.lr)`);
          }
          stats.loss.push(out.loss);
          stats.pgLoss.push(out.pgLoss);
          stats.klLoss.push(out.klLoss);
          stats.clipFraction.push(out.clipFraction);
          stats.gradNorm.push(out.gradNorm);
          step++;
          if (step % every === 0 && step < totalSteps) {
            progress = await savePartial(partialDir, step, progress, every, { config: ckpt.config, weights: model.weights, optimizer: trainer.state(), extra: { step, stats } });
          }
          heartbeat({ ...progress, step });
        }
      }
      const saved = await saveCheckpointRecorded(db, runId, iteration, join(runDir(config, runId), 'checkpoints', `iter-${pad(iteration)}`), {
        config: ckpt.config,
        weights: model.weights,
        optimizer: trainer.state(),
        extra: { iteration, ema: input.ema, dataPosition: input.dataPosition, seed: config.seed },
      });
      const metrics: Record<string, number> = {
        'train/loss': mean(stats.loss),
        'train/pg_loss': mean(stats.pgLoss),
        'train/kl': mean(stats.klLoss),
        'train/clip_fraction': mean(stats.clipFraction),
        'train/grad_norm': mean(stats.gradNorm),
        'train/lr': lr,
        'train/steps': step,
      };
      await upsertMetrics(db, runId, iteration, metrics);
      return { checkpoint: saved.checkpoint, optimizer: saved.optimizer, ema: input.ema, dataPosition: input.dataPosition, metrics };
    });
  }

  async function evaluate(input: EvaluateInput): Promise<EvalResult> {
    const { runId, iteration } = input;
    return stage({ runId, stage: 'evaluate', iteration, shard: 0 }, async () => {
      const config = await runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer);
      const model = await inferenceModel(input.checkpoint, config.runtime.providers);
      const data = await loadDataset(input.dataset);
      const rows = data.eval.slice(0, config.eval.prompts);
      const results = await sample(
        model,
        tok,
        rows.map((row, k) => ({ prompt: promptTokens(tok, row.prompt), key: [0x7fff_0000 + iteration, k, 0] })),
        { temperature: config.eval.temperature, topK: 0, topP: 1, maxNewTokens: config.eval.maxNewTokens, seed: config.seed },
        (done) => heartbeat({ phase: 'sample', done }),
      );
      heartbeat({ phase: 'score' });
      const scores = await scoreResponses(
        model,
        tok,
        rows.map((row, k) => ({ prompt: row.prompt, reference: row.reference, response: results[k]!.text })),
      );
      // Greedy evaluation: one response per prompt, so every group has one member (ppl = 1 by definition).
      const groups: OperaGroup[] = rows.map((row, k) => ({
        taskType: row.taskType,
        reference: row.reference,
        rollouts: [{ response: results[k]!.text, ...scores[k]! }],
      }));
      const { rewards } = operaRewards(groups, null, config.reward);
      const flat = rewards.map((g) => g[0]!);
      await upsertSamples(
        db,
        rows.map((row, k) => ({
          runId,
          split: 'eval' as const,
          iteration,
          promptId: row.id,
          sampleIndex: 0,
          prompt: row.prompt,
          reference: row.reference,
          taskType: row.taskType,
          response: results[k]!.text,
          responseTokens: results[k]!.tokens.length,
          reward: flat[k]!.total,
          ppl: flat[k]!.ppl,
          reflection: flat[k]!.reflection,
          reflectionCount: flat[k]!.reflectionCount,
          correct: flat[k]!.correct ?? null,
          advantage: null,
          logpFull: scores[k]!.logpFull,
          logpInitial: scores[k]!.logpInitial,
          logpSegments: scores[k]!.logpSegments,
        })),
      );
      const math = rows.map((row, k) => ({ row, k })).filter(({ row }) => row.taskType === 'math');
      const result: EvalResult = {
        iteration,
        prompts: rows.length,
        reward: mean(flat.map((r) => r.total)),
        ppl: mean(flat.map((r) => r.ppl)),
        reflection: mean(flat.map((r) => r.reflection)),
        refLogp: mean(scores.map((s) => s.logpFull)),
        exactMatch: math.length ? mean(math.map(({ k }) => (flat[k]!.correct ? 1 : 0))) : null,
        meanResponseTokens: mean(results.map((r) => r.tokens.length)),
      };
      const metrics: Record<string, number> = {
        'eval/reward': result.reward,
        'eval/ppl': result.ppl,
        'eval/reflection': result.reflection,
        'eval/ref_logp': result.refLogp,
        'eval/response_tokens': result.meanResponseTokens,
      };
      if (result.exactMatch !== null) metrics['eval/exact_match'] = result.exactMatch;
      await upsertMetrics(db, runId, iteration, metrics);
      await putJson(db, { runId, kind: 'eval', iteration, name: 'eval.json' }, join(runDir(config, runId), 'eval', `iter-${pad(iteration)}.json`), {
        result,
        responses: rows.map((row, k) => ({ id: row.id, response: results[k]!.text })),
      });
      return result;
    });
  }

  return {
    setRunStatus: setStatus,
    appendEvent: recordEvent,
    recordedRunState: recordedState,
    prepareDataset,
    coldStartSft,
    rollout,
    score,
    reward,
    update,
    evaluate,
  };
}
