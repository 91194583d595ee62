import { grpoAdvantages } from '../../opera/grpo';
import { operaRewards } from '../../opera/reward';
import { DEFAULT_REWARD_KIND, REWARD_KINDS, rewardsByKind, type KindGroup } from '../../opera/reward-kinds';

const ln = Math.log;

describe('rewardsByKind', () => {
  // Per-token log-probs of a 2-token reference after prompt + full response, per rollout:
  //   A: ln 0.5, ln 0.3   → mean p 0.4, mean log p −0.9486
  //   B: ln 0.8, ln 0.6   → mean p 0.7, mean log p −0.3670
  //   C: ln 0.01, ln 0.99 → mean p 0.5, mean log p −2.3076 (lowest log-prob, middle probability)
  const tokenLogps = [
    [ln(0.5), ln(0.3)],
    [ln(0.8), ln(0.6)],
    [ln(0.01), ln(0.99)],
  ];
  const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const writing: KindGroup = {
    taskType: 'writing',
    reference: 'The fox is red.',
    rollouts: [
      '<think>Hmm, a fox.\n\nBut it is red.</think>The fox is red.',
      '<think>A fox.</think> The fox is red. ',
      'The fox is red',
    ].map((response, i) => ({
      response,
      logpFull: meanOf(tokenLogps[i]!),
      logpInitial: -3,
      logpSegments: response.startsWith('<think>Hmm') ? [-2.5, -1.0] : response.startsWith('<think>') ? [-2.9] : [],
      probFull: [0.4, 0.7, 0.5][i]!,
    })),
  };
  const math: KindGroup = {
    taskType: 'math',
    reference: '4',
    rollouts: ['<think>2+2</think>\\boxed{4}', '\\boxed{5}', '<think>\\boxed{4}</think>no'].map((response) => ({
      response,
      logpFull: -1,
      logpInitial: -2,
      logpSegments: response.startsWith('<think>') ? [-1.5] : [],
      probFull: 0.25,
    })),
  };

  it('opera is the default and is operaRewards unchanged', () => {
    expect(DEFAULT_REWARD_KIND).toBe('opera');
    expect(REWARD_KINDS).toEqual(['opera', 'likelihood', 'exact']);
    expect(rewardsByKind('opera', [writing, math], -2, { pplWeight: 0.5 })).toEqual(
      operaRewards([writing, math], -2, { pplWeight: 0.5 }),
    );
  });

  it('likelihood rewards the mean per-token probability of the reference, group-relative through GRPO', () => {
    const opera = operaRewards([writing], null);
    const out = rewardsByKind('likelihood', [writing], null);
    const totals = out.rewards[0]!.map((r) => r.total);
    expect(totals).toEqual([0.4, 0.7, 0.5]);
    // Not exp of the mean log-prob: C has the lowest log-prob but the middle reward.
    expect(tokenLogps.map((t) => meanOf(t.map(Math.exp)))).toEqual([
      expect.closeTo(0.4, 12),
      expect.closeTo(0.7, 12),
      expect.closeTo(0.5, 12),
    ]);
    // mean 1.6/3; deviations −4/30, 5/30, −1/30; unbiased std √21/30 → advantages ≈ −4, 5, −1 over √21 (ε = 1e-6).
    const adv = grpoAdvantages(totals, [0, 0, 0]);
    [-4, 5, -1].forEach((d, i) => expect(adv[i]).toBeCloseTo(d / 30 / (Math.sqrt(21) / 30 + 1e-6), 12));
    // The OPERA components and the EMA are still computed and returned as operaRewards gives them.
    expect(out.ema).toBe(opera.ema);
    out.rewards[0]!.forEach((r, i) => {
      const o = opera.rewards[0]![i]!;
      expect([r.ppl, r.reflection, r.reflectionCount, r.correct]).toEqual([
        o.ppl,
        o.reflection,
        o.reflectionCount,
        o.correct,
      ]);
    });
    expect(opera.rewards[0]!.map((r) => r.ppl)).toEqual([0.5, 1, 0]); // OPERA ranks C last
    // OPERA-only settings shape the components but never the likelihood total.
    expect(rewardsByKind('likelihood', [writing], null, { pplWeight: 1, reflectionWeight: 0 }).rewards).toEqual(
      out.rewards,
    );
  });

  it('likelihood refuses a rollout without a valid mean probability', () => {
    const without = { ...writing, rollouts: writing.rollouts.map(({ probFull: _, ...r }) => r) };
    expect(() => rewardsByKind('likelihood', [without], null)).toThrow(
      /likelihood: group 0 rollout 0: probFull is undefined/,
    );
    const bad = { ...writing, rollouts: writing.rollouts.map((r) => ({ ...r, probFull: NaN })) };
    expect(() => rewardsByKind('likelihood', [bad], null)).toThrow(/probFull is NaN/);
    expect(() =>
      rewardsByKind('likelihood', [{ ...writing, rollouts: [{ ...writing.rollouts[0]!, probFull: 1.5 }] }], null),
    ).toThrow(/probFull is 1.5/);
    // opera and exact do not need it.
    expect(() => rewardsByKind('exact', [without], null)).not.toThrow();
  });

  it('exact rewards an exact final answer on writing and math, and records it as correct', () => {
    const out = rewardsByKind('exact', [writing, math], null);
    // writing: the text outside the think block, trimmed, equals the reference; no period is a miss.
    expect(out.rewards[0]!.map((r) => [r.total, r.correct])).toEqual([
      [1, true],
      [1, true],
      [0, false],
    ]);
    // math: the last \boxed{} outside the think block; a box inside the reasoning does not count.
    expect(out.rewards[1]!.map((r) => [r.total, r.correct])).toEqual([
      [1, true],
      [0, false],
      [0, false],
    ]);
    const opera = operaRewards([writing, math], null);
    expect(out.ema).toBe(opera.ema);
    expect(out.rewards.flat().map((r) => [r.ppl, r.reflection, r.reflectionCount])).toEqual(
      opera.rewards.flat().map((r) => [r.ppl, r.reflection, r.reflectionCount]),
    );
    // Group-relative: the two right writing answers get ≈ +1/√3, the miss ≈ −2/√3 (mean 2/3, std 1/√3, ε = 1e-6).
    const adv = grpoAdvantages(
      out.rewards[0]!.map((r) => r.total),
      [0, 0, 0],
    );
    [1, 1, -2].forEach((d, i) => expect(adv[i]).toBeCloseTo(d / 3 / (1 / Math.sqrt(3) + 1e-6), 12));
  });
});
