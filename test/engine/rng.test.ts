import { philox4x32, uniform } from '../../engine/rng';

describe('philox4x32', () => {
  // Known-answer vectors from Random123's kat_vectors (philox4x32_10).
  it('matches the Random123 known-answer vectors', () => {
    expect(philox4x32([0, 0, 0, 0], [0, 0])).toEqual([0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    expect(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])).toEqual([
      0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd,
    ]);
    expect(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])).toEqual([
      0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1,
    ]);
  });
});

describe('uniform', () => {
  it('is a pure function of (seed, key, counter)', () => {
    const a = uniform(42, [3, 1, 7], 100);
    // Interleave unrelated draws: a stateful generator would drift, a counter-based one cannot.
    for (let i = 0; i < 50; i++) uniform(i, [i], i);
    expect(uniform(42, [3, 1, 7], 100)).toBe(a);
  });

  it('changes with every component, including key length and high words', () => {
    const base = uniform(1, [2, 3], 4);
    const variants = [
      uniform(2, [2, 3], 4),
      uniform(1, [3, 3], 4),
      uniform(1, [2, 4], 4),
      uniform(1, [2, 3], 5),
      uniform(1, [2, 3, 0], 4),
      uniform(1, [2], 4),
      uniform(1 + 2 ** 32, [2, 3], 4),
      uniform(1, [2 + 2 ** 32, 3], 4),
      uniform(1, [2, 3], 4 + 2 ** 32),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
  });

  it('is uniform on [0, 1): mean, variance and a 16-bucket chi-square', () => {
    const n = 10000;
    const buckets = new Array<number>(16).fill(0);
    let sum = 0,
      sumSq = 0,
      min = Infinity,
      max = -Infinity;
    for (let t = 0; t < n; t++) {
      const u = uniform(7, [t % 5, 9], t);
      min = Math.min(min, u);
      max = Math.max(max, u);
      sum += u;
      sumSq += u * u;
      buckets[Math.floor(u * 16)]! += 1;
    }
    expect(min).toBeGreaterThanOrEqual(0);
    expect(max).toBeLessThan(1);
    const mean = sum / n;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(sumSq / n - mean * mean - 1 / 12)).toBeLessThan(0.005);
    const expected = n / 16;
    const chi2 = buckets.reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(37.7); // p = 0.001 critical value for 15 degrees of freedom
  });

  it('rejects indices that would silently alias', () => {
    expect(() => uniform(-1, [], 0)).toThrow('seed must be a non-negative safe integer, got -1');
    expect(() => uniform(0, [1.5], 0)).toThrow('key[0] must be a non-negative safe integer, got 1.5');
    expect(() => uniform(0, [], 2 ** 53)).toThrow('counter must be a non-negative safe integer');
  });
});
