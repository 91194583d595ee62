/**
 * The GRPO policy loss as a training objective for the engine: the same per-token formula as
 * `policyLoss` in grpo.ts (OPERA.md "GRPO": clipped ratio with dual clip, `low_var_kl` to the frozen
 * reference), written with the engine's graph builder so that the engine can differentiate and train it.
 * A test compares the two on the same inputs.
 */
import type { FloatType } from '../engine/graph';
import { paddedLength, type Objective, type TrainBatch } from '../engine/trainer';
import { resolvePolicyLoss, type LossAggregation, type PolicyLossOptions } from './grpo';

/** A rollout as the update trains on it: prompt + response tokens, and per-response-token log-probs. */
export interface GrpoSequence {
  tokens: number[];
  /** Index of the first response token in `tokens`. */
  responseStart: number;
  advantage: number;
  /** Log-probs of the response tokens under the policy that sampled them (before this update). */
  oldLogp: number[];
  /** … and under the frozen reference policy. */
  refLogp: number[];
}

/**
 * The objective; its inputs come from `grpoBatch`. `weight` carries the aggregation (token-mean or
 * seq-mean-token-mean), so the aggregation is data, not graph structure.
 */
export function grpoObjective(options: PolicyLossOptions = {}): Objective {
  const { clipLow, clipHigh, dualClip, klCoef } = resolvePolicyLoss(options);
  return {
    key: `grpo|${JSON.stringify({ clipLow, clipHigh, dualClip, klCoef })}`,
    build(g, logp) {
      const ft = g.floatType;
      const B = logp.shape[0]!;
      const oldLogp = g.input('oldLogp', ft, [...logp.shape]);
      const refLogp = g.input('refLogp', ft, [...logp.shape]);
      const weight = g.input('weight', ft, [...logp.shape]); // aggregation weights, 0 on padding and prompt
      const clipWeight = g.input('clipWeight', ft, [...logp.shape]); // token-mean weights for clipFraction
      const adv = g.input('advantage', ft, [B, 1]);
      const c = (x: number) => g.scalar(x);
      const total = (x: typeof logp) => g.reduceSum(x, [0, 1], false); // []
      const ratio = g.exp(g.clip(g.sub(logp, oldLogp), c(-20), c(20))); // [B, T]
      const negA = g.neg(adv); // [B, 1]
      const l1 = g.mul(negA, ratio); // [B, T]
      const l2 = g.mul(negA, g.clip(ratio, c(1 - clipLow), c(1 + clipHigh))); // [B, T]
      const c1 = g.max(l1, l2);
      const c2 = g.min(g.mul(negA, c(dualClip)), c1);
      const pg = g.where(g.less(adv, c(0)), c2, c1); // [B, T]
      const k = g.clip(g.sub(refLogp, logp), c(-20), c(20));
      const kl = g.clip(g.sub(g.sub(g.exp(k), k), c(1)), c(-10), c(10)); // [B, T]
      const pgLoss = total(g.mul(weight, pg));
      const klLoss = total(g.mul(weight, kl));
      const clipFraction = total(g.mul(clipWeight, g.cast(g.greater(l2, l1), ft)));
      return { loss: g.add(pgLoss, g.mul(klLoss, c(klCoef))), metrics: { pgLoss, klLoss, clipFraction } };
    },
  };
}

/** Inputs of `grpoObjective` for a mini-batch: log-probs at the positions that predict response tokens, and the weights. */
export function grpoBatch(
  batch: GrpoSequence[],
  aggregation: LossAggregation = resolvePolicyLoss().aggregation,
  floatType: FloatType = 'float32',
): TrainBatch {
  const rows = batch.map((r) => r.tokens);
  const B = rows.length;
  const T = paddedLength(rows);
  const Arr = floatType === 'float64' ? Float64Array : Float32Array;
  const oldLogp = new Arr(B * T);
  const refLogp = new Arr(B * T);
  const weight = new Arr(B * T);
  const clipWeight = new Arr(B * T);
  const advantage = new Arr(B);
  let total = 0;
  let seqs = 0;
  batch.forEach((r, b) => {
    const n = r.tokens.length - r.responseStart;
    if (r.responseStart < 1 || n < 0)
      throw new Error(`grpo batch: row ${b}: responseStart ${r.responseStart} must be in [1, ${r.tokens.length}]`);
    if (r.oldLogp.length !== n || r.refLogp.length !== n)
      throw new Error(
        `grpo batch: row ${b}: oldLogp/refLogp need ${n} values (one per response token), got ${r.oldLogp.length}/${r.refLogp.length}`,
      );
    advantage[b] = r.advantage;
    total += n;
    if (n > 0) seqs++;
    for (let k = 0; k < n; k++) {
      const at = b * T + r.responseStart - 1 + k;
      oldLogp[at] = r.oldLogp[k]!;
      refLogp[at] = r.refLogp[k]!;
    }
  });
  batch.forEach((r, b) => {
    const n = r.tokens.length - r.responseStart;
    for (let k = 0; k < n; k++) {
      const at = b * T + r.responseStart - 1 + k;
      clipWeight[at] = 1 / total;
      weight[at] = aggregation === 'token-mean' ? 1 / total : 1 / (n * seqs);
    }
  });
  return {
    rows,
    feeds: {
      oldLogp: { data: oldLogp, dims: [B, T] },
      refLogp: { data: refLogp, dims: [B, T] },
      weight: { data: weight, dims: [B, T] },
      clipWeight: { data: clipWeight, dims: [B, T] },
      advantage: { data: advantage, dims: [B, 1] },
    },
  };
}
