/**
 * Seeded randomness outside the sampler (which uses Philox, engine/rng.ts): every random choice of a run
 * is a function of the run's seed and named parts, so a retried or resumed stage makes the same choice.
 */
import { createHash } from 'node:crypto';

/** mulberry32: a small, well-mixed 32-bit PRNG, so the same seed gives the same sequence everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates with the given PRNG; returns a new array. */
export function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** A seeded permutation of 0..n-1. */
export function permutation(n: number, seed: number): number[] {
  return shuffle(
    Array.from({ length: n }, (_, i) => i),
    mulberry32(seed),
  );
}

/**
 * A 32-bit seed for one use of randomness, derived from the run's seed and what it is for, e.g.
 * `deriveSeed(seed, 'update-order', iteration, epoch)`: distinct uses get independent streams, and the
 * same use always gets the same one. (sha256 of the parts, so no two (label, parts) collide by accident.)
 */
export function deriveSeed(seed: number, label: string, ...parts: number[]): number {
  return createHash('sha256')
    .update(JSON.stringify([seed, label, ...parts]))
    .digest()
    .readUInt32LE(0);
}
