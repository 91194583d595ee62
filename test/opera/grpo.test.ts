import { grpoAdvantages, policyLoss, type PolicyLossInput } from '../../opera/grpo';

describe('grpoAdvantages', () => {
  it('uses the unbiased std within each group', () => {
    // group a = [1, 2, 3]: mean 2, unbiased var (1+0+1)/2 = 1, std 1 → A = ±1/(1+1e-6), 0.
    // (A population std sqrt(2/3) would give ±1.2247 instead.)
    // group b = [0, 4]: mean 2, var (4+4)/1 = 8, std 2√2 → A = ∓2/(2√2+1e-6) ≈ ∓0.70711.
    const A = grpoAdvantages([1, 0, 2, 4, 3], ['a', 'b', 'a', 'b', 'a']);
    expect(A[0]).toBeCloseTo(-1 / (1 + 1e-6), 12);
    expect(A[2]).toBeCloseTo(0, 12);
    expect(A[4]).toBeCloseTo(1 / (1 + 1e-6), 12);
    expect(A[1]).toBeCloseTo(-2 / (2 * Math.SQRT2 + 1e-6), 12);
    expect(A[3]).toBeCloseTo(2 / (2 * Math.SQRT2 + 1e-6), 12);
  });

  it('gives a group of one mean 0 and std 1', () => {
    // R = 0.5 alone → (0.5 − 0) / (1 + 1e-6).
    expect(grpoAdvantages([0.5], [7])[0]).toBeCloseTo(0.5 / (1 + 1e-6), 12);
  });

  it('gives 0 to a group whose rewards are all equal, and keeps 1 and "1" apart', () => {
    // group number 1 = [0.3, 0.3] → 0, 0; group string "1" = [1] alone → 1/(1+1e-6).
    const A = grpoAdvantages([0.3, 0.3, 1], [1, 1, '1']);
    expect(A[0]).toBe(0);
    expect(A[1]).toBe(0);
    expect(A[2]).toBeCloseTo(1 / (1 + 1e-6), 12);
  });

  it('honours epsilon and normalizeByStd=false', () => {
    // [1, 3]: mean 2, std √2 → with ε = 0.5: ∓1/(√2+0.5); unnormalised: ∓1.
    expect(grpoAdvantages([1, 3], [0, 0], { epsilon: 0.5 })[0]).toBeCloseTo(-1 / (Math.SQRT2 + 0.5), 12);
    expect(grpoAdvantages([1, 3], [0, 0], { normalizeByStd: false })).toEqual([-1, 1]);
  });

  it('rejects mismatched lengths', () => {
    expect(() => grpoAdvantages([1, 2], [0])).toThrow(/2 rewards but 1 group ids/);
  });
});

describe('policyLoss', () => {
  const old = -1;
  const at = (ratio: number) => old + Math.log(ratio); // logp with exp(logp − oldLogp) = ratio
  // seq 0, A = +1: ρ = 1.5 (clipped: l1 = −1.5, l2 = −1.2, c1 = −1.2), ρ = 1 (l1 = l2 = −1).
  // seq 1, A = −1: ρ = 0.5 (l1 = 0.5, l2 = 0.8 → c1 = 0.8, clipped; c2 = min(3, 0.8) = 0.8),
  //                ρ = 4   (l1 = 4, l2 = 1.2 → c1 = 4, not clipped; dual clip c2 = min(3, 4) = 3),
  //                ρ = 1   (c1 = 1, c2 = 1), then a padding token (mask 0) with garbage values.
  // KL, k = ref − logp: seq0 t0 k = ln2 → 2 − ln2 − 1; seq0 t1 k = −ln2 → 0.5 + ln2 − 1 (sum 0.5);
  //   seq1 t2 k = 25 → clamped to 20 → exp(20) − 21 ≈ 4.85e8 → clamped to 10; others k = 0 → 0.
  const logp = [
    [at(1.5), at(1)],
    [at(0.5), at(4), at(1), at(Math.exp(5))],
  ];
  const input: PolicyLossInput = {
    logp,
    oldLogp: [
      [old, old],
      [old, old, old, old],
    ],
    refLogp: [
      [logp[0]![0]! + Math.LN2, logp[0]![1]! - Math.LN2],
      [logp[1]![0]!, logp[1]![1]!, logp[1]![2]! + 25, logp[1]![3]! - 30],
    ],
    advantages: [1, -1],
    mask: [
      [1, 1],
      [1, 1, 1, 0],
    ],
  };

  it('token-mean: clip, dual clip, KL clamp, padding masked out', () => {
    const r = policyLoss(input);
    // pg tokens: −1.2, −1, 0.8, 3, 1 → sum 2.6 / 5 = 0.52.
    expect(r.pgLoss).toBeCloseTo(0.52, 12);
    // kl tokens: 0.5 (the ln2 pair) + 0 + 0 + 10 → 10.5 / 5 = 2.1.
    expect(r.klLoss).toBeCloseTo(2.1, 12);
    // loss = 0.52 + 0.001 · 2.1.
    expect(r.loss).toBeCloseTo(0.5221, 12);
    // clipped branch chosen (l2 > l1) at seq0 t0 and seq1 t0: 2 of 5 masked tokens.
    expect(r.clipFraction).toBeCloseTo(0.4, 12);
  });

  it('seq-mean-token-mean averages each sequence first', () => {
    const r = policyLoss(input, { aggregation: 'seq-mean-token-mean', klCoef: 0.01 });
    // pg: seq0 (−1.2 − 1)/2 = −1.1; seq1 (0.8 + 3 + 1)/3 = 1.6 → (−1.1 + 1.6)/2 = 0.25.
    expect(r.pgLoss).toBeCloseTo(0.25, 12);
    // kl: seq0 0.5/2 = 0.25; seq1 10/3 → (0.25 + 10/3)/2 = 1.7916667.
    expect(r.klLoss).toBeCloseTo((0.25 + 10 / 3) / 2, 12);
    expect(r.loss).toBeCloseTo(0.25 + 0.01 * ((0.25 + 10 / 3) / 2), 12);
    // clipFraction stays a token mean (2/5) whatever the aggregation.
    expect(r.clipFraction).toBeCloseTo(0.4, 12);
  });

  it('uses asymmetric clipLow / clipHigh and a configurable dual clip', () => {
    const r = policyLoss(input, { clipLow: 0.1, clipHigh: 0.28, dualClip: 10, klCoef: 0 });
    // seq0 t0: l2 = −1·1.28 = −1.28 > −1.5 → −1.28; seq1 t0: l2 = 1·0.9 = 0.9 > 0.5 → 0.9;
    // seq1 t1: c1 = 4, c2 = min(10, 4) = 4. Tokens −1.28, −1, 0.9, 4, 1 → 3.62 / 5 = 0.724.
    expect(r.pgLoss).toBeCloseTo(0.724, 12);
    expect(r.loss).toBeCloseTo(0.724, 12);
  });

  // Catches: KL direction flipped (k = logp − refLogp). One token each, so nothing can cancel.
  it('low_var_kl uses k = refLogp − logp: one-token cases pin the direction', () => {
    const one = (logp: number, refLogp: number) =>
      policyLoss({ logp: [[logp]], oldLogp: [[logp]], refLogp: [[refLogp]], advantages: [0], mask: [[1]] });
    // refLogp − logp = ln2: kl = e^{ln2} − ln2 − 1 = 1 − ln2 ≈ 0.30685 (flipped: e^{−ln2} + ln2 − 1 = ln2 − 0.5 ≈ 0.19315).
    const up = one(-2, -2 + Math.LN2);
    expect(up.klLoss).toBeCloseTo(1 - Math.LN2, 12);
    // A = 0 and ρ = 1: no pg loss, so loss = 0.001 · kl.
    expect(up.pgLoss).toBe(0);
    expect(up.loss).toBeCloseTo(0.001 * (1 - Math.LN2), 15);
    // refLogp − logp = −ln2: kl = 1/2 + ln2 − 1 ≈ 0.19315 (flipped: 1 − ln2).
    expect(one(-1, -1 - Math.LN2).klLoss).toBeCloseTo(Math.LN2 - 0.5, 12);
    // k = 3 stays inside the clamps: e^3 − 4 ≈ 16.0855 is clamped to 10 (flipped: e^{−3} + 2 ≈ 2.0498, no clamp).
    expect(one(-5, -2).klLoss).toBe(10);
    // k = −3: e^{−3} + 3 − 1 ≈ 2.0498 (flipped: clamped to 10).
    expect(one(-2, -5).klLoss).toBeCloseTo(Math.exp(-3) + 2, 12);
  });

  it('clamps the log-ratio so huge differences stay finite', () => {
    // log-ratio 1000 would give exp(1000) = ∞ and −0·∞ = NaN for A = 0; clamped to 20, the loss is 0.
    const r = policyLoss({ logp: [[999]], oldLogp: [[-1]], refLogp: [[999]], advantages: [0], mask: [[1]] });
    expect(r.pgLoss).toBe(0);
    expect(Number.isFinite(r.loss)).toBe(true);
  });

  it('returns zeros for an all-padding batch and rejects ragged input', () => {
    const zeros = { loss: 0, pgLoss: 0, klLoss: 0, clipFraction: 0 };
    const padding = { logp: [[0]], oldLogp: [[0]], refLogp: [[0]], advantages: [1], mask: [[0]] };
    expect(policyLoss(padding)).toEqual(zeros);
    // Catches: 0/0 = NaN when no sequence has a token (seq-mean-token-mean's outer mean over 0 sequences).
    expect(policyLoss(padding, { aggregation: 'seq-mean-token-mean' })).toEqual(zeros);
    expect(() =>
      policyLoss({ logp: [[0, 0]], oldLogp: [[0]], refLogp: [[0, 0]], advantages: [1], mask: [[1, 1]] }),
    ).toThrow(/sequence 0: oldLogp has 1 tokens, logp has 2/);
  });

  // Catches: missing per-sequence count checks (a short array would read undefined and give NaN).
  it('rejects arrays whose sequence count differs from logp, naming the array', () => {
    const ok = { logp: [[0], [0]], oldLogp: [[0], [0]], refLogp: [[0], [0]], advantages: [1, -1], mask: [[1], [1]] };
    expect(() => policyLoss({ ...ok, oldLogp: [[0]] })).toThrow('policyLoss: oldLogp has 1 sequences, logp has 2');
    expect(() => policyLoss({ ...ok, refLogp: [[0], [0], [0]] })).toThrow(
      'policyLoss: refLogp has 3 sequences, logp has 2',
    );
    expect(() => policyLoss({ ...ok, mask: [] })).toThrow('policyLoss: mask has 0 sequences, logp has 2');
    expect(() => policyLoss({ ...ok, advantages: [1] })).toThrow('policyLoss: 1 advantages for 2 sequences');
    expect(policyLoss(ok).loss).toBe(0); // A = ±1 with ρ = 1 gives ∓1: token mean 0; KL 0
  });

  // Catches: a sequence with no tokens entering seq-mean-token-mean's outer mean (as 0/0 = NaN or as a 0).
  it('seq-mean-token-mean leaves sequences without tokens out of the outer mean', () => {
    // seq 0: A = 1, ρ = 1 → pg −1 per token, 2 tokens → −1; seq 1: all padding (garbage values); seq 2:
    // A = −0.5, ρ = 1 → pg 0.5 → 0.5. Outer mean over the 2 sequences with tokens: (−1 + 0.5)/2 = −0.25.
    const r = policyLoss(
      {
        logp: [[-1, -2], [5, 5], [-3]],
        oldLogp: [[-1, -2], [-9, -9], [-3]],
        refLogp: [[-1, -2], [0, 0], [-3]],
        advantages: [1, 7, -0.5],
        mask: [[1, 1], [0, 0], [1]],
      },
      { aggregation: 'seq-mean-token-mean' },
    );
    expect(r.pgLoss).toBeCloseTo(-0.25, 12);
    expect(r.klLoss).toBe(0);
  });
});
