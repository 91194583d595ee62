/**
 * Stage `update` (queue `train`): GRPO epochs over the iteration's rollouts, mini-batch by mini-batch,
 * with the policy loss of opera/grpo-graph.ts against the frozen post-SFT reference, then the next
 * checkpoint (weights, AdamW state, and the EMA baseline and data position that decide what follows).
 * Resumable: partial checkpoints (weights, AdamW state, loss statistics so far) about four times per update.
 */
import { join } from 'node:path';
import { upsertMetrics } from '../db/queries';
import { LlamaModel } from '../engine/model';
import { NonFiniteLossError, Trainer } from '../engine/trainer';
import { grpoBatch, grpoObjective } from '../opera/grpo-graph';
import { deriveSeed, permutation } from '../util/random';
import { inferenceModel, loadCheckpointChecked, saveCheckpointRecorded, warmupLr } from './engine';
import type { RewardFile } from './reward';
import { PermanentError, mean, pad, type PartialProgress, type Runtime } from './runtime';
import { getJson } from './store';
import type { UpdateInput, UpdateOutput } from './types';

interface LossStats {
  loss: number[];
  pgLoss: number[];
  klLoss: number[];
  clipFraction: number[];
  gradNorm: number[];
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
      const model = new LlamaModel(ckpt.config, ckpt.weights, { providers: config.runtime.providers });
      const reference = await inferenceModel(input.reference, config.runtime.providers);
      const seqs = sequences.map((s) => ({
        tokens: [...s.promptTokens, ...s.tokens],
        start: s.promptTokens.length,
        advantage: s.advantage,
      }));
      const usable = seqs.filter((s) => s.tokens.length > s.start);
      // Old and reference log-probs come from the input checkpoints, so a resumed update gets the same ones.
      const oldLogp = await model.tokenLogps(usable);
      const refLogp = await reference.tokenLogps(usable);

      const perEpoch = Math.ceil(usable.length / g.miniBatchSize);
      const totalSteps = g.epochs * perEpoch;
      const every = Math.max(1, Math.ceil(totalSteps / 4));
      const partialDir = (n: number) =>
        join(rt.runDir(config, runId), 'checkpoints', 'update-partial', `iter-${pad(iteration)}`, `step-${pad(n)}`);
      const resumed = await rt.resumePartial(partialDir, ckpt.config);
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
      // The mini-batch order of each epoch is seeded, so a resumed update applies the same batches.
      const orders = Array.from({ length: g.epochs }, (_, epoch) =>
        permutation(usable.length, deriveSeed(config.seed, 'update-order', iteration, epoch)),
      );
      const loss = {
        clip: g.clip,
        clipLow: g.clipLow,
        clipHigh: g.clipHigh,
        dualClip: g.dualClip,
        klCoef: g.klCoef,
        aggregation: g.aggregation,
      };
      let lr = g.lr;
      try {
        await trainer.train({
          objective: grpoObjective(loss),
          steps: totalSteps,
          start: resumed?.step ?? 0,
          batch: (step) => {
            const b = (step % perEpoch) * g.miniBatchSize;
            const picked = orders[Math.floor(step / perEpoch)]!.slice(b, b + g.miniBatchSize);
            return grpoBatch(
              picked.map((u) => ({
                tokens: usable[u]!.tokens,
                responseStart: usable[u]!.start,
                advantage: usable[u]!.advantage,
                oldLogp: oldLogp[u]!,
                refLogp: refLogp[u]!,
              })),
              g.aggregation,
            );
          },
          // Warm-up counts optimizer steps across iterations (the AdamW state carries the count).
          lr: (_, optimizerStep) => (lr = warmupLr(g.lr, g.warmupSteps, optimizerStep)),
          onStep: async (step, out) => {
            stats.loss.push(out.loss);
            stats.pgLoss.push(out.metrics.pgLoss!);
            stats.klLoss.push(out.metrics.klLoss!);
            stats.clipFraction.push(out.metrics.clipFraction!);
            stats.gradNorm.push(out.gradNorm);
            const done = step + 1;
            if (done % every === 0 && done < totalSteps) {
              progress = await rt.savePartial(partialDir, done, progress, every, {
                config: ckpt.config,
                weights: model.weights,
                optimizer: trainer.state(),
                extra: { step: done, stats },
              });
            }
            rt.heartbeat({ ...progress, step: done });
          },
        });
      } catch (err) {
        if (err instanceof NonFiniteLossError)
          throw new PermanentError(`update: ${err.message} of iteration ${iteration} (diverged; lower grpo.lr)`);
        throw err;
      }
      const saved = await saveCheckpointRecorded(
        rt.db,
        runId,
        iteration,
        join(rt.runDir(config, runId), 'checkpoints', `iter-${pad(iteration)}`),
        {
          config: ckpt.config,
          weights: model.weights,
          optimizer: trainer.state(),
          extra: { iteration, ema: input.ema, dataPosition: input.dataPosition, seed: config.seed },
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
