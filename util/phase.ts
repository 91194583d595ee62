/**
 * Where a worker's wall time goes: inside compute calls (the engine: sampling, scoring, training steps),
 * inside storage (writing, uploading, downloading and hashing artifacts), or neither (orchestration:
 * Temporal, the database, bookkeeping). Activities run concurrently and storage happens inside a
 * training loop's callbacks, so time is not summed per call: each instant counts once, as storage if
 * any storage call is active, else as compute if any compute call is, else as neither. `npm run bench`
 * reads the totals (orchestrationOverheadFraction).
 */
export type Phase = 'compute' | 'storage';

const active: Record<Phase, number> = { compute: 0, storage: 0 };
const totals: Record<Phase, number> = { compute: 0, storage: 0 };
let clock = () => performance.now();
let since = clock();

/** Charges the time since the last change to whichever phase was current. */
function settle(): void {
  const now = clock();
  const current: Phase | undefined = active.storage > 0 ? 'storage' : active.compute > 0 ? 'compute' : undefined;
  if (current) totals[current] += (now - since) / 1000;
  since = now;
}

/** Runs `fn` as a `phase` call. */
export async function inPhase<T>(phase: Phase, fn: () => Promise<T>): Promise<T> {
  settle();
  active[phase]++;
  try {
    return await fn();
  } finally {
    settle();
    active[phase]--;
  }
}

/** Seconds spent in each phase since the process started (or the last reset). */
export function phaseSeconds(): Record<Phase, number> {
  settle();
  return { ...totals };
}

export function resetPhases(): void {
  settle();
  totals.compute = 0;
  totals.storage = 0;
}

/** Replaces the clock (milliseconds), for tests. */
export function usePhaseClock(now: () => number): void {
  clock = now;
  since = now();
}
