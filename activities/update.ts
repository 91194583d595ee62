/**
 * Stage `update` (queue `train`): GRPO epochs over the iteration's rollouts, mini-batch by mini-batch,
 * with the policy loss of opera/grpo-graph.ts against the frozen post-SFT reference, then the next
 * checkpoint (weights, AdamW state, and the EMA baseline and data position that decide what follows).
 * Resumable: a partial checkpoint (weights, AdamW state, loss statistics so far) every quarter of the
 * update, and no more often than every MIN_PARTIAL_EVERY steps.
 */
import { join } from 'node:path';
import { inPhase } from '../util/phase';
import { upsertMetrics } from '../db/queries';
import { LlamaModel } from '../engine/model';
import { NonFiniteLossError, Trainer, type TrainLoop } from '../engine/trainer';
import type { RunConfig } from '../config/schema';
import { grpoBatch, grpoObjective, type GrpoSequence } from '../opera/grpo-graph';
import { deriveSeed, permutation } from '../util/random';
import { inferenceModel, loadCheckpointChecked, saveCheckpointRecorded, warmupLr } from './engine';
import type { RewardFile } from './reward';
import { ConfigError, mean, pad, type PartialProgress, type Runtime } from './runtime';
import { getJson } from './store';
import type { UpdateInput, UpdateOutput } from './types';

/** Updates of fewer steps than this save no partial checkpoint (they are redone whole after a crash). */
export const MIN_PARTIAL_EVERY = 8;

interface LossStats {
  loss: number[];
  pgLoss: number[];
  klLoss: number[];
  clipFraction: number[];
  gradNorm: number[];
}

/**
 * The GRPO update loop of an iteration: `epochs` passes over the sequences in mini-batches of
 * `miniBatchSize`, each epoch in a seeded order (a resumed update applies the same batches), the policy
 * loss with the run's clip, dual clip, KL and aggregation settings, and a learning rate warmed up over the
 * optimizer's steps across iterations (the AdamW state carries the count).
 */
export function updateLoop(
  g: RunConfig['grpo'],
  seed: number,
  iteration: number,
  sequences: GrpoSequence[],
): Pick<TrainLoop, 'objective' | 'steps' | 'batch' | 'lr'> {
  const perEpoch = Math.ceil(sequences.length / g.miniBatchSize);
  const orders = Array.from({ length: g.epochs }, (_, epoch) =>
    permutation(sequences.length, deriveSeed(seed, 'update-order', iteration, epoch)),
  );
  const { clip, clipLow, clipHigh, dualClip, klCoef, aggregation } = g;
  return {
    objective: grpoObjective({ clip, clipLow, clipHigh, dualClip, klCoef, aggregation }),
    steps: g.epochs * perEpoch,
    batch: (step) => {
      const b = (step % perEpoch) * g.miniBatchSize;
      return grpoBatch(
        orders[Math.floor(step / perEpoch)]!.slice(b, b + g.miniBatchSize).map((u) => sequences[u]!),
        aggregation,
      );
    },
    lr: (_, optimizerStep) => warmupLr(g.lr, g.warmupSteps, optimizerStep),
  };
}

export const updateActivities = (rt: Runtime) => ({
  async update(input: UpdateInput): Promise<UpdateOutput> {
    const { runId, iteration } = input;
    return rt.stage({ runId, stage: 'update', iteration, shard: 0 }, async () => {
      const config = await rt.runConfig(runId);
      const g = config.grpo;
      const { sequences } = await getJson<RewardFile>(input.rewards.artifact);
      // A fresh copy of the policy: training mutates weights, the cached inference model must not change.
      const ckpt = await loadCheckpointChecked(input.checkpoint);
      const providers = await rt.providersFor(config);
      const model = new LlamaModel(ckpt.config, ckpt.weights, { providers });
      const reference = await inferenceModel(input.reference, providers);
      const seqs = sequences.map((s) => ({
        tokens: [...s.promptTokens, ...s.tokens],
        start: s.promptTokens.length,
        advantage: s.advantage,
      }));
      const usable = seqs.filter((s) => s.tokens.length > s.start);
      // Old and reference log-probs come from the input checkpoints, so a resumed update gets the same ones.
      const oldLogp = await inPhase('compute', () => model.tokenLogps(usable));
      const refLogp = await inPhase('compute', () => reference.tokenLogps(usable));

      const loop = updateLoop(
        g,
        config.seed,
        iteration,
        usable.map((u, k) => ({
          tokens: u.tokens,
          responseStart: u.start,
          advantage: u.advantage,
          oldLogp: oldLogp[k]!,
          refLogp: refLogp[k]!,
        })),
      );
      const totalSteps = loop.steps;
      // About four partials per update, but none closer than 8 steps: a partial costs as much as a few steps
      // of a small model (weights + AdamW state written and fsynced), and an update of a few steps is
      // cheaper to redo than to checkpoint after every step.
      const every = Math.max(MIN_PARTIAL_EVERY, Math.ceil(totalSteps / 4));
      const partialDir = (n: number) =>
        join(rt.runDir(config, runId), 'checkpoints', 'update-partial', `iter-${pad(iteration)}`, `step-${pad(n)}`);
      const resumed = await rt.resumePartial(rt.store(config), partialDir, ckpt.config);
      if (resumed) model.setWeights(resumed.checkpoint.weights);
      const trainer = new Trainer(model, {}, resumed?.checkpoint.optimizer ?? ckpt.optimizer);
      const stats: LossStats = (resumed?.checkpoint.extra?.stats as LossStats | undefined) ?? {
        loss: [],
        pgLoss: [],
        klLoss: [],
        clipFraction: [],
        gradNorm: [],
      };
      let progress: PartialProgress | undefined = resumed?.progress;
      let lr = g.lr;
      try {
        await trainer.train({
          ...loop,
          start: resumed?.step ?? 0,
          lr: (step, optimizerStep) => (lr = loop.lr(step, optimizerStep)),
          onStep: async (step, out) => {
            stats.loss.push(out.loss);
            stats.pgLoss.push(out.metrics.pgLoss!);
            stats.klLoss.push(out.metrics.klLoss!);
            stats.clipFraction.push(out.metrics.clipFraction!);
            stats.gradNorm.push(out.gradNorm);
            const done = step + 1;
            if (done % every === 0 && done < totalSteps) {
              progress = await rt.savePartial(rt.store(config), partialDir, done, progress, every, {
                config: ckpt.config,
                weights: model.weights,
                optimizer: trainer.state(),
                extra: { step: done, stats },
                ...(ckpt.base ? { base: ckpt.base } : {}),
              });
            }
            rt.heartbeat({ ...progress, step: done });
          },
        });
      } catch (err) {
        if (err instanceof NonFiniteLossError)
          throw new ConfigError(`update: ${err.message} of iteration ${iteration} (diverged; lower grpo.lr)`, [
            'grpo.lr',
          ]);
        throw err;
      }
      const saved = await saveCheckpointRecorded(
        rt.db,
        rt.store(config),
        runId,
        iteration,
        join(rt.runDir(config, runId), 'checkpoints', `iter-${pad(iteration)}`),
        {
          config: ckpt.config,
          weights: model.weights,
          optimizer: trainer.state(),
          extra: { iteration, ema: input.ema, dataPosition: input.dataPosition, seed: config.seed },
          ...(ckpt.base ? { base: ckpt.base } : {}), // LoRA: the same frozen base, named not rewritten
        },
      );
      const metrics: Record<string, number> = {
        'train/loss': mean(stats.loss),
        'train/pg_loss': mean(stats.pgLoss),
        'train/kl': mean(stats.klLoss),
        'train/clip_fraction': mean(stats.clipFraction),
        'train/grad_norm': mean(stats.gradNorm),
        'train/lr': lr,
        'train/steps': totalSteps,
      };
      await upsertMetrics(rt.db, runId, iteration, metrics);
      return {
        checkpoint: saved.checkpoint,
        optimizer: saved.optimizer,
        ema: input.ema,
        dataPosition: input.dataPosition,
        metrics,
      };
    });
  },
});
