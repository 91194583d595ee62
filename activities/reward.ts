/**
 * Stage `reward`: the reward of every rollout of the iteration under `reward.kind` (one batch: the OPERA
 * EMA baseline spans all groups; the OPERA components are recorded for every kind), GRPO advantages per
 * group, the sample rows and reward metrics, and the batch the update trains on (an artifact). No engine
 * work: the log-probs and probabilities come from the score stage.
 */
import { join } from 'node:path';
import { upsertMetrics, upsertSamples } from '../db/queries';
import type { NewSample } from '../db/schema';
import { grpoAdvantages } from '../opera/grpo';
import { rewardsByKind, type KindGroup } from '../opera/reward-kinds';
import type { ScoredItem } from './rollout';
import { mean, pad, type Runtime } from './runtime';
import { sampleRow } from './samples';
import { getJson, putJson } from './store';
import type { RewardInput, RewardOutput } from './types';

/** What the update trains on (each rollout's tokens and advantage), and the batch's sample rows as computed. */
export interface RewardFile {
  sequences: { promptTokens: number[]; tokens: number[]; advantage: number }[];
  /** `operaflow verify --repair` restores lost rows from here (exact text: rows in PostgreSQL cannot hold NUL). */
  samples: NewSample[];
}

export const rewardActivities = (rt: Runtime) => ({
  async reward(input: RewardInput): Promise<RewardOutput> {
    const { runId, iteration } = input;
    return rt.stage({ runId, stage: 'reward', iteration, shard: 0 }, async () => {
      const config = await rt.runConfig(runId);
      const shards = await Promise.all(input.scores.map((s) => getJson<{ items: ScoredItem[] }>(s.artifact)));
      const items = shards.flatMap((s) => s.items).sort((a, b) => a.index - b.index);
      const groups: KindGroup[] = items.map((item) => ({
        taskType: item.taskType,
        reference: item.reference,
        rollouts: item.samples.map((s, j) => ({ response: s.text, ...item.scores[j]! })),
      }));
      const { rewards, ema } = rewardsByKind(config.reward.kind, groups, input.ema, config.reward);
      const flat = rewards.flatMap((group, gi) => group.map((r, j) => ({ r, item: items[gi]!, j })));
      const advantages = grpoAdvantages(
        flat.map((f) => f.r.total),
        flat.map((f) => f.item.index),
      );
      const rows = flat.map(({ r, item, j }, k) =>
        sampleRow(
          {
            runId,
            split: 'train',
            iteration,
            promptId: item.promptId,
            sampleIndex: j,
            prompt: item.prompt,
            reference: item.reference,
            taskType: item.taskType,
          },
          item.samples[j]!,
          r,
          item.scores[j]!,
          advantages[k]!,
        ),
      );
      await upsertSamples(rt.db, rows);
      const totals = flat.map((f) => f.r.total);
      const m = mean(totals);
      const math = flat.filter((f) => f.item.taskType === 'math');
      const metrics: Record<string, number> = {
        'reward/mean': m,
        'reward/std': Math.sqrt(mean(totals.map((t) => (t - m) ** 2))),
        'reward/ppl': mean(flat.map((f) => f.r.ppl)),
        'reward/reflection': mean(flat.map((f) => f.r.reflection)),
        'reward/reflection_count': mean(flat.map((f) => f.r.reflectionCount)),
        'reward/logp_full': mean(flat.map((f) => f.item.scores[f.j]!.logpFull)),
        'rollout/response_tokens': mean(rows.map((r) => r.responseTokens ?? 0)),
      };
      if (ema !== null) metrics['reward/ema'] = ema;
      if (math.length > 0) metrics['reward/math_accuracy'] = mean(math.map((f) => (f.r.correct ? 1 : 0)));
      await upsertMetrics(rt.db, runId, iteration, metrics);
      const file: RewardFile = {
        sequences: flat.map(({ item, j }, k) => ({
          promptTokens: item.promptTokens,
          tokens: item.samples[j]!.tokens,
          advantage: advantages[k]!,
        })),
        samples: rows,
      };
      const path = join(rt.runDir(config, runId), 'rewards', `iter-${pad(iteration)}`, 'batch.json');
      const artifact = await putJson(
        rt.db,
        rt.store(config),
        { runId, kind: 'rewards', iteration, name: 'batch.json' },
        path,
        file,
      );
      return { artifact, ema, metrics };
    });
  },
});
