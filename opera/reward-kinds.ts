/**
 * Reward kinds (`reward.kind`): which score of a rollout its advantage is computed from. Every kind
 * goes through the same stages and yields the same shape as `operaRewards`, so the reward stage only
 * passes the kind on; GRPO's group normalisation makes each kind group-relative.
 *
 * - `opera`: the OPERA reward (opera/reward.ts), unchanged.
 * - `likelihood`: RLPR-style (arXiv 2506.18254): the mean per-token probability (not log-probability)
 *   of the reference answer's tokens after prompt + full response. No checkpoints, no reflection term,
 *   no EMA.
 * - `exact`: 1 when the final answer matches the reference exactly (`exactMatch`), else 0, for every
 *   task type: a verifier-only reward.
 *
 * The OPERA components (ppl, reflection, reflectionCount) are computed for every kind and recorded
 * with each sample; only `total` depends on the kind. `correct`: for `exact`, the exact match of every
 * task type (it is the reward); for the other kinds, as `operaRewards` gives it (math tasks only).
 */
import { exactMatch, operaRewards, type OperaGroup, type OperaReward, type OperaRewardOptions } from './reward';

export const REWARD_KINDS = ['opera', 'likelihood', 'exact'] as const;
export type RewardKind = (typeof REWARD_KINDS)[number];
export const DEFAULT_REWARD_KIND: RewardKind = 'opera';

/** Float32 token log-probs can round a hair above 0; a mean probability past this is a scorer bug. */
const PROB_SLACK = 1e-6;

/** An OPERA group whose rollouts may carry `probFull` (what `likelihood` rewards; see ScoredResponse). */
export interface KindGroup extends OperaGroup {
  rollouts: (OperaGroup['rollouts'][number] & { probFull?: number })[];
}

/**
 * Rewards of a batch under `kind`, and the updated EMA baseline. The OPERA EMA is carried for every
 * kind, not only `opera`: the recorded OPERA components of the next batches are computed with it, and a
 * run's components then do not depend on which kind it trains on.
 */
export function rewardsByKind(
  kind: RewardKind,
  groups: KindGroup[],
  ema: number | null,
  options: Partial<OperaRewardOptions> = {},
): { rewards: OperaReward[][]; ema: number | null } {
  const opera = operaRewards(groups, ema, options);
  if (kind === 'opera') return opera;
  const rewards = opera.rewards.map((group, g) =>
    group.map((r, i): OperaReward => {
      const { taskType, reference, rollouts } = groups[g]!;
      const rollout = rollouts[i]!;
      if (kind === 'exact') {
        const correct = exactMatch(taskType, rollout.response, reference);
        return { ...r, total: correct ? 1 : 0, correct };
      }
      const p = rollout.probFull;
      if (p === undefined || !Number.isFinite(p) || p < 0 || p > 1 + PROB_SLACK) {
        throw new Error(
          `rewardsByKind: likelihood: group ${g} rollout ${i}: probFull is ${p}, not a mean probability in [0, 1]`,
        );
      }
      return { ...r, total: p };
    }),
  );
  return { rewards, ema: opera.ema };
}
