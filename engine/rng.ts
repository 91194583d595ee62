/**
 * Counter-based randomness (Philox4x32-10, Salmon et al. 2011, as in Random123 / JAX / PyTorch).
 *
 * A number is a pure function of (seed, key..., counter): no generator state advances, so the token
 * sampled for (iteration, prompt, sample, step) is the same whatever else shares its batch, in which
 * order requests run, and whether the run was restarted in between. That is what makes a resumed
 * OPERA run make the same choices as an uninterrupted one.
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High 32 bits of the 64-bit product of two uint32 (Math.imul gives only the low half). */
function mulhi(a: number, b: number): number {
  const al = a & 0xffff,
    ah = a >>> 16,
    bl = b & 0xffff,
    bh = b >>> 16;
  const lh = al * bh,
    hl = ah * bl;
  const mid = ((al * bl) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (ah * bh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 0x10000)) >>> 0;
}

/** Philox4x32 with 10 rounds: counter (4 × uint32), key (2 × uint32) → 4 × uint32. */
export function philox4x32(
  counter: readonly [number, number, number, number],
  key: readonly [number, number],
): [number, number, number, number] {
  let [c0, c1, c2, c3] = counter.map((x) => x >>> 0) as [number, number, number, number];
  let k0 = key[0] >>> 0,
    k1 = key[1] >>> 0;
  for (let round = 0; round < 10; round++) {
    const hi0 = mulhi(M0, c0),
      lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2),
      lo1 = Math.imul(M1, c2) >>> 0;
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

function checkIndex(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`rng: ${name} must be a non-negative safe integer, got ${value}`);
  }
}

/** Splits a safe integer (< 2^53) into its low and high 32-bit words, so large values never collide. */
function words(value: number): [number, number] {
  return [value >>> 0, Math.floor(value / 0x100000000) >>> 0];
}

/**
 * The Philox key for one (seed, key...) stream. Key elements are absorbed two words per element,
 * three words per Philox call, with the key length in the first call so `[1]` and `[1, 0]` differ.
 */
function streamKey(seed: number, key: readonly number[]): [number, number] {
  checkIndex('seed', seed);
  key.forEach((k, i) => checkIndex(`key[${i}]`, k));
  let state = words(seed);
  const flat: number[] = [key.length];
  for (const k of key) flat.push(...words(k));
  for (let i = 0; i < flat.length; i += 3) {
    const out = philox4x32(
      [flat[i] ?? 0, flat[i + 1] ?? 0, flat[i + 2] ?? 0, 0x6b657931 /* 'key1' domain tag */ + i],
      state,
    );
    state = [out[0], out[1]];
  }
  return state;
}

/** A uniform number in [0, 1) with 53 random bits, determined only by (seed, key, counter). */
export function uniform(seed: number, key: readonly number[], counter: number): number {
  checkIndex('counter', counter);
  const [lo, hi] = words(counter);
  const [a, b] = philox4x32([lo, hi, 0, 0], streamKey(seed, key));
  return ((a >>> 5) * 67108864 + (b >>> 6)) / 9007199254740992; // (27 bits · 2^26 + 26 bits) / 2^53
}
