/**
 * GRPO advantages and the clipped policy loss, as plain-array reference implementations of
 * verl's `compute_grpo_outcome_advantage`, `compute_policy_loss` (with dual clip), `kl_penalty`
 * (`low_var_kl`) and `agg_loss`. The training graph in engine/ must compute the same numbers:
 * a test compares it with these functions, so every step below follows shared/spec/OPERA.md exactly.
 */

export interface AdvantageOptions {
  /** Added to the std before dividing (verl: 1e-6). */
  epsilon?: number;
  /** false: Dr.GRPO-style `A = R − mean` without dividing by the std. */
  normalizeByStd?: boolean;
}

/**
 * Per group: `A_i = (R_i − mean) / (std + ε)` with the unbiased std (divide by n − 1, as
 * `torch.std` does). A group of one has no spread: verl sets mean 0, std 1, so `A = R / (1 + ε)`.
 * A group whose rewards are all equal gets A = 0 for every member (std 0, numerator 0).
 */
export function grpoAdvantages(
  rewards: number[],
  groupIds: (string | number)[],
  options: AdvantageOptions = {},
): number[] {
  const epsilon = options.epsilon ?? 1e-6;
  const normalizeByStd = options.normalizeByStd ?? true;
  if (rewards.length !== groupIds.length) {
    throw new Error(`grpoAdvantages: ${rewards.length} rewards but ${groupIds.length} group ids`);
  }
  // Key by type as well as value so that group 1 and group "1" stay distinct.
  const groups = new Map<string, number[]>();
  groupIds.forEach((id, i) => {
    const key = `${typeof id}:${id}`;
    const members = groups.get(key) ?? [];
    members.push(i);
    groups.set(key, members);
  });
  const stats = new Map<string, { mean: number; std: number }>();
  for (const [key, members] of groups) {
    const values = members.map((i) => rewards[i]!);
    const n = values.length;
    if (n === 1) {
      stats.set(key, { mean: 0, std: 1 });
      continue;
    }
    const mean = values.reduce((a, b) => a + b, 0) / n;
    // Σ(v + m)(v − m) = Σv² − n·m² = Σ(v − m)² because Σv = n·m: turning either `v - mean` alone into
    // `v + mean` computes the same variance, so those two mutants are equivalent (the others are not).
    const variance =
      values.reduce(
        (a, v) => a + /* Stryker disable ArithmeticOperator: equivalent, see above */ (v - mean) * (v - mean),
        /* Stryker restore ArithmeticOperator */ 0,
      ) /
      (n - 1);
    stats.set(key, { mean, std: Math.sqrt(variance) });
  }
  return rewards.map((r, i) => {
    const { mean, std } = stats.get(`${typeof groupIds[i]}:${groupIds[i]}`)!;
    return normalizeByStd ? (r - mean) / (std + epsilon) : r - mean;
  });
}

/** verl's defaults (OPERA.md "GRPO"): the one table the plain loss, the training graph and the run config use. */
export const POLICY_LOSS_DEFAULTS = Object.freeze({
  clip: 0.2,
  dualClip: 3,
  klCoef: 0.001,
  aggregation: 'token-mean' as LossAggregation,
});

/** Options with every default filled in and the clip bounds resolved (each defaults to `clip`). */
export function resolvePolicyLoss(options: PolicyLossOptions = {}): Required<Omit<PolicyLossOptions, 'clip'>> {
  const clip = options.clip ?? POLICY_LOSS_DEFAULTS.clip;
  return {
    clipLow: options.clipLow ?? clip,
    clipHigh: options.clipHigh ?? clip,
    dualClip: options.dualClip ?? POLICY_LOSS_DEFAULTS.dualClip,
    klCoef: options.klCoef ?? POLICY_LOSS_DEFAULTS.klCoef,
    aggregation: options.aggregation ?? POLICY_LOSS_DEFAULTS.aggregation,
  };
}

/** `[sequence][token]` arrays; `advantages` has one value per sequence (broadcast over its tokens). */
export interface PolicyLossInput {
  logp: number[][];
  oldLogp: number[][];
  refLogp: number[][];
  advantages: number[];
  mask: number[][];
}

export type LossAggregation = 'token-mean' | 'seq-mean-token-mean';

export interface PolicyLossOptions {
  /** Symmetric clip ε (verl `clip_ratio`, 0.2). */
  clip?: number;
  /** Lower clip ε: ρ is clamped below at 1 − clipLow (default `clip`). */
  clipLow?: number;
  /** Upper clip ε: ρ is clamped above at 1 + clipHigh (default `clip`). */
  clipHigh?: number;
  /** Dual-clip constant c (verl `clip_ratio_c`, 3): for A < 0 the loss is at most −A·c. */
  dualClip?: number;
  /** Weight of the low-variance KL to the frozen reference (0.001). */
  klCoef?: number;
  aggregation?: LossAggregation;
}

export interface PolicyLossResult {
  /** pgLoss + klCoef · klLoss. */
  loss: number;
  pgLoss: number;
  klLoss: number;
  /**
   * Fraction of masked tokens (weighted by mask) where PPO clipping was active, i.e. where the
   * clipped branch was taken: `l2 > l1` (verl's `pg_clipfrac`). The dual clip is not counted here
   * (verl reports it separately as `pg_clipfrac_lower`). Always aggregated as a token mean.
   */
  clipFraction: number;
}

/**
 * Masked mean of per-token values.
 * - `token-mean`: Σ mask·v / Σ mask over all tokens of the mini-batch.
 * - `seq-mean-token-mean`: mean over sequences of (Σ_t mask·v / Σ_t mask); sequences whose mask
 *   sums to 0 are left out of the outer mean (they have no tokens to average).
 * Returns 0 for an empty mask (rather than NaN), so an all-padding mini-batch contributes nothing.
 */
function aggregate(values: number[][], mask: number[][], aggregation: LossAggregation): number {
  if (aggregation === 'token-mean') {
    let sum = 0;
    let count = 0;
    values.forEach((row, s) =>
      row.forEach((v, t) => {
        const m = mask[s]![t]!;
        sum += m * v;
        count += m;
      }),
    );
    return count > 0 ? sum / count : 0;
  }
  let seqSum = 0;
  let seqCount = 0;
  values.forEach((row, s) => {
    let sum = 0;
    let count = 0;
    row.forEach((v, t) => {
      const m = mask[s]![t]!;
      sum += m * v;
      count += m;
    });
    if (count > 0) {
      seqSum += sum / count;
      seqCount += 1;
    }
  });
  return seqCount > 0 ? seqSum / seqCount : 0;
}

const clamp = (x: number, lo: number, hi: number) => Math.min(Math.max(x, lo), hi);

/**
 * The clipped policy-gradient loss with dual clip plus the `low_var_kl` penalty, per token:
 * 1. `ρ = exp(clamp(logp − oldLogp, −20, 20))` (the clamp keeps exp finite, as verl does);
 * 2. `l1 = −A·ρ`, `l2 = −A·clamp(ρ, 1 − clipLow, 1 + clipHigh)`, `c1 = max(l1, l2)`;
 * 3. dual clip: `c2 = min(−A·dualClip, c1)`; token pg loss = `A < 0 ? c2 : c1`;
 * 4. `k = clamp(refLogp − logp, −20, 20)`, `kl = clamp(exp(k) − k − 1, −10, 10)` (k3 estimator);
 * 5. pgLoss and klLoss are each aggregated with the same aggregation over masked tokens;
 *    `loss = pgLoss + klCoef · klLoss`.
 */
export function policyLoss(input: PolicyLossInput, options: PolicyLossOptions = {}): PolicyLossResult {
  const { clipLow, clipHigh, dualClip, klCoef, aggregation } = resolvePolicyLoss(options);
  const { logp, oldLogp, refLogp, advantages, mask } = input;

  const nSeq = logp.length;
  for (const [name, arr] of [
    ['oldLogp', oldLogp],
    ['refLogp', refLogp],
    ['mask', mask],
  ] as const) {
    if (arr.length !== nSeq) throw new Error(`policyLoss: ${name} has ${arr.length} sequences, logp has ${nSeq}`);
  }
  if (advantages.length !== nSeq) {
    throw new Error(`policyLoss: ${advantages.length} advantages for ${nSeq} sequences`);
  }

  const pg: number[][] = [];
  const kl: number[][] = [];
  const clipped: number[][] = [];
  for (let s = 0; s < nSeq; s++) {
    const row = logp[s]!;
    const T = row.length;
    for (const [name, arr] of [
      ['oldLogp', oldLogp],
      ['refLogp', refLogp],
      ['mask', mask],
    ] as const) {
      if (arr[s]!.length !== T) {
        throw new Error(`policyLoss: sequence ${s}: ${name} has ${arr[s]!.length} tokens, logp has ${T}`);
      }
    }
    const A = advantages[s]!;
    const pgRow: number[] = [];
    const klRow: number[] = [];
    const clipRow: number[] = [];
    for (let t = 0; t < T; t++) {
      const lp = row[t]!;
      const ratio = Math.exp(clamp(lp - oldLogp[s]![t]!, -20, 20));
      const l1 = -A * ratio;
      const l2 = -A * clamp(ratio, 1 - clipLow, 1 + clipHigh);
      const c1 = Math.max(l1, l2);
      const c2 = Math.min(-A * dualClip, c1);
      // Stryker disable next-line EqualityOperator: `A <= 0` is equivalent (at A = 0 both branches are 0: c1 = max(−0·ρ, −0·clip(ρ)), c2 = min(−0·c, c1)); `A >= 0` is the same node, so it goes too
      pgRow.push(A < 0 ? c2 : c1);
      clipRow.push(l2 > l1 ? 1 : 0);
      const k = clamp(refLogp[s]![t]! - lp, -20, 20);
      klRow.push(clamp(Math.exp(k) - k - 1, -10, 10));
    }
    pg.push(pgRow);
    kl.push(klRow);
    clipped.push(clipRow);
  }

  const pgLoss = aggregate(pg, mask, aggregation);
  const klLoss = aggregate(kl, mask, aggregation);
  return {
    loss: pgLoss + klCoef * klLoss,
    pgLoss,
    klLoss,
    clipFraction: aggregate(clipped, mask, 'token-mean'),
  };
}
