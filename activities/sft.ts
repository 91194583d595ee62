/**
 * Stage `coldStartSft`: supervised fine-tuning on the cold-start set (the dataset's own traces, or traces
 * a teacher writes first: OPERA.md "Cold-start synthesis"), then the iteration-0 checkpoint, which is
 * also the frozen KL reference of GRPO. Resumable: every few steps a partial checkpoint (weights + AdamW
 * state) is saved and heartbeated; teacher synthesis is resumable per prompt.
 */
import { join } from 'node:path';
import { inPhase } from '../util/phase';
import type { RunConfig } from '../config/schema';
import { modelConfigFor } from '../config/model';
import { isAdapterName } from '../engine/lora';
import { cachedPromise } from '../util/cache';
import { getArtifact, upsertMetrics } from '../db/queries';
import { baseRefOf, loadCheckpoint, type BaseRef } from '../engine/checkpoint';
import type { LlamaConfig } from '../engine/config';
import { LlamaModel, initWeights, type Weights } from '../engine/model';
import { sample } from '../engine/sampler';
import { stopIds, type Tokenizer } from '../engine/tokenizer';
import { NonFiniteLossError, Trainer, sftBatch, sftObjective, type TrainLoop } from '../engine/trainer';
import { applyStops, synthesizeRows, type TeacherGenerator } from '../opera/coldstart';
import { coldStartSet, type SftRow } from '../opera/synthetic';
import { deriveSeed, permutation } from '../util/random';
import { getTokenizer, promptTokens, saveCheckpointPublished, saveCheckpointRecorded, warmupLr } from './engine';
import { ConfigError, PermanentError, pad, type DatasetFile, type PartialProgress, type Runtime } from './runtime';
import { getJson, isS3, putJson, type ArtifactStore } from './store';
import type { DatasetRef, SftOutput, StageInput } from './types';

/**
 * The engine as an OPERA teacher: sampling with stop strings applied here (synthesis must know which one
 * matched), and context log-probs for perplexity ranking. Text never contains a special token other than
 * the think markers: a sample that reaches `<pad>`, `<bos>` or `<eos>` ends there.
 */
export function engineTeacher(teacher: LlamaModel, tok: Tokenizer, seed: number): TeacherGenerator {
  const maxPositions = teacher.config.max_position_embeddings;
  // Every id that ends a generation (a model may stop on several eos ids) ends the teacher's text too.
  const ending = new Set([tok.padId, tok.bosId, ...stopIds(tok)]);
  return {
    async generate(context, opts) {
      const prompt = promptTokens(tok, context);
      const budget = Math.min(opts.maxNewTokens, maxPositions - prompt.length);
      // A context that fills the model's positions ends the step empty (the trace cannot grow further).
      if (budget <= 0) return { text: '', stoppedBy: null, logps: [] };
      const [r] = await inPhase('compute', () =>
        sample(teacher, tok, [{ prompt, key: opts.key }], {
          temperature: opts.temperature,
          topK: opts.topK,
          topP: opts.topP,
          maxNewTokens: budget,
          seed,
        }),
      );
      const end = r!.tokens.findIndex((t) => ending.has(t));
      const kept = end < 0 ? r!.tokens : r!.tokens.slice(0, end);
      const cut = applyStops(tok.decode(kept), opts.stop);
      // The log-probs of the tokens that spell the kept text: all of them, or (cut at a stop string) the
      // shortest prefix that covers it. Counted on tokens, not by re-encoding the text: bytes that are not
      // valid UTF-8 decode to U+FFFD, which re-encodes to other tokens.
      let n = kept.length;
      if (cut.stoppedBy !== null)
        for (n = 0; n < kept.length && tok.decode(kept.slice(0, n)).length < cut.text.length;) n++;
      return { ...cut, logps: r!.logps.slice(0, n) };
    },
    async contextLogps(text) {
      const tokens = promptTokens(tok, text);
      if (tokens.length < 3) return [];
      const [logps] = await inPhase('compute', () => teacher.tokenLogps([{ tokens, start: 2 }]));
      return logps!;
    },
  };
}

/**
 * The weights a run starts from: `model.checkpoint`'s, or fresh ones from the seed. Under `model.lora` a
 * fresh adapter (B = 0: the model computes what its base does) joins the checkpoint's base weights.
 */
export async function startingWeights(config: RunConfig, modelConfig: LlamaConfig): Promise<Weights> {
  if (!config.model.checkpoint) return initWeights(modelConfig, config.seed);
  const { lora, ...base } = modelConfig;
  const weights = (await loadCheckpoint(config.model.checkpoint, base)).weights;
  if (!lora) return weights;
  for (const [name, w] of initWeights(modelConfig, config.seed, isAdapterName)) weights.set(name, w);
  return weights;
}

const bases = new Map<string, Promise<{ base?: BaseRef }>>();

/**
 * The base LoRA checkpoints of a run refer to: `model.checkpoint` itself, or (a fresh model) its initial
 * weights saved once under `checkpoints/base`. Nothing for a run that trains all weights.
 */
async function loraBase(
  config: RunConfig,
  store: ArtifactStore,
  runDir: string,
  modelConfig: LlamaConfig,
  weights: Weights,
): Promise<{ base?: BaseRef }> {
  if (!modelConfig.lora) return {};
  if (config.model.checkpoint) return { base: await baseRefOf(config.model.checkpoint) };
  const { lora: _lora, ...plain } = modelConfig;
  const dir = join(runDir, 'checkpoints', 'base');
  const frozen = new Map([...weights].filter(([name]) => !isAdapterName(name)));
  await saveCheckpointPublished(store, dir, { config: plain, weights: frozen });
  // In an object store the base is named by its URI, so a worker on another machine can fetch it.
  const ref = await baseRefOf(dir);
  return { base: isS3(store.root) ? { ...ref, dir: store.uriOf(dir) } : ref };
}

/** Cold-start SFT runs when enabled with at least one step. */
export const coldStartRuns = (cs: RunConfig['coldStart']): boolean => cs.enabled && cs.steps > 0;

/** The teacher of cold-start synthesis (`coldStart.teacher.checkpoint`, else the run's starting model) and its settings. */
export async function teacherFor(
  config: RunConfig,
  modelConfig: LlamaConfig,
  initialWeights: Weights,
  providers: string[],
) {
  const { checkpoint, ...options } = config.coldStart.teacher;
  const teacher = checkpoint
    ? await loadCheckpoint(checkpoint).then((c) => new LlamaModel(c.config, c.weights, { providers }))
    : new LlamaModel(modelConfig, initialWeights, { providers });
  return { teacher, options };
}

export interface SftExample {
  tokens: number[];
  lossMask: number[];
}

/** BOS + prompt, then response + EOS, with the loss on the response only. */
export function sftExamples(rows: SftRow[], tok: Tokenizer): SftExample[] {
  return rows.map((ex) => {
    const p = promptTokens(tok, ex.prompt);
    const r = [...tok.encode(ex.response), tok.eosId];
    return { tokens: [...p, ...r], lossMask: [...p.map(() => 0), ...r.map(() => 1)] };
  });
}

/**
 * The cold-start SFT loop of a run: `coldStart.steps` steps of `batchSize` examples in a seeded order,
 * with a linear warm-up. Batches and the learning rate depend on the step only, so a resumed loop
 * continues exactly.
 */
export function sftLoop(
  cs: RunConfig['coldStart'],
  seed: number,
  examples: SftExample[],
): Pick<TrainLoop, 'objective' | 'steps' | 'batch' | 'lr'> {
  const order = permutation(examples.length, deriveSeed(seed, 'sft-order'));
  const batchSize = Math.min(cs.batchSize, examples.length);
  return {
    objective: sftObjective,
    steps: cs.steps,
    batch: (step) =>
      sftBatch(
        Array.from({ length: batchSize }, (_, k) => examples[order[(step * cs.batchSize + k) % examples.length]!]!),
      ),
    lr: (step) => warmupLr(cs.lr, cs.warmupSteps, step),
  };
}

export const sftActivities = (rt: Runtime) => {
  /**
   * Cold-start synthesis: the teacher writes each training prompt's reasoning step by step
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
    const recorded = await getArtifact(rt.db, key);
    if (recorded) return getJson<SftRow[]>(recorded);
    const { teacher, options } = await teacherFor(config, modelConfig, initialWeights, await rt.providersFor(config));
    const dir = join(rt.runDir(config, runId), 'coldstart');
    const log = await rt.openPartialLog<SftRow>(dir, 0);
    const done = new Set(log.items.map((i) => i.id));
    for await (const row of synthesizeRows(
      data.train,
      engineTeacher(teacher, tok, config.seed),
      options,
      [deriveSeed(config.seed, 'coldstart')],
      done,
    )) {
      await log.append({ id: row.id, prompt: row.prompt, response: row.output });
    }
    await putJson(rt.db, rt.store(config), key, join(dir, 'sft.json'), log.items);
    await upsertMetrics(rt.db, runId, 0, { 'coldstart/rows': log.items.length });
    await log.remove();
    return log.items;
  }

  async function coldStartSft(input: StageInput & { dataset: DatasetRef }): Promise<SftOutput> {
    const { runId, iteration } = input;
    return rt.stage({ runId, stage: 'coldStartSft', iteration, shard: 0 }, async () => {
      const config = await rt.runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer, config.data.chatTemplate);
      const modelConfig = modelConfigFor(config, tok);
      const weights = await startingWeights(config, modelConfig);
      const model = new LlamaModel(modelConfig, weights, { providers: await rt.providersFor(config) });
      // Under LoRA every checkpoint of the run names one frozen base instead of holding it (Checkpoint.base).
      const base = () =>
        cachedPromise(bases, runId, () =>
          loraBase(config, rt.store(config), rt.runDir(config, runId), modelConfig, weights),
        );
      const cs = config.coldStart;
      let steps = 0;
      let finalLoss: number | null = null;
      if (coldStartRuns(cs)) {
        const data = await rt.loadDataset(input.dataset);
        const sft = cs.synthesize
          ? await synthesizeColdStart(config, runId, data, tok, modelConfig, weights)
          : coldStartSet(data.train, config.seed);
        if (sft.length === 0) throw new PermanentError('cold start: the dataset yields no SFT examples');
        const examples = sftExamples(sft, tok);
        // One directory per saved step: the last heartbeat that reached the server may name an older one.
        const partialDir = (n: number) =>
          join(rt.runDir(config, runId), 'checkpoints', 'sft-partial', `step-${pad(n)}`);
        const every = Math.max(10, Math.ceil(cs.steps / 4));
        const resumed = await rt.resumePartial(rt.store(config), partialDir, modelConfig);
        if (resumed) model.setWeights(resumed.checkpoint.weights);
        const trainer = new Trainer(model, { weightDecay: cs.weightDecay }, resumed?.checkpoint.optimizer);
        let progress: PartialProgress | undefined = resumed?.progress;
        try {
          await trainer.train({
            ...sftLoop(cs, config.seed, examples),
            start: resumed?.step ?? 0,
            onStep: async (step, out) => {
              finalLoss = out.loss;
              if (step % 5 === 0 || step === cs.steps - 1)
                await upsertMetrics(rt.db, runId, step, { 'sft/loss': out.loss, 'sft/grad_norm': out.gradNorm });
              if ((step + 1) % every === 0 && step + 1 < cs.steps) {
                progress = await rt.savePartial(rt.store(config), partialDir, step + 1, progress, every, {
                  config: modelConfig,
                  weights: model.weights,
                  optimizer: trainer.state(),
                  extra: { step: step + 1 },
                  ...(await base()),
                });
              }
              rt.heartbeat({ ...progress, step: step + 1 });
            },
          });
        } catch (err) {
          if (err instanceof NonFiniteLossError)
            throw new ConfigError(`cold-start SFT: ${err.message} (lower coldStart.lr)`, ['coldStart.lr']);
          throw err;
        }
        steps = cs.steps;
      }
      const { checkpoint } = await saveCheckpointRecorded(
        rt.db,
        rt.store(config),
        runId,
        0,
        join(rt.runDir(config, runId), 'checkpoints', `iter-${pad(0)}`),
        {
          config: modelConfig,
          weights: model.weights,
          extra: { iteration: 0, stage: 'coldStartSft', steps, ema: null, dataPosition: 0 },
          ...(await base()),
        },
      );
      return { checkpoint, steps, finalLoss };
    });
  }

  return { coldStartSft };
};
