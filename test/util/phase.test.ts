/**
 * The time accounting behind orchestrationOverheadFraction (util/phase.ts): each instant counts once,
 * as storage if any storage call is active, else as compute if any compute call is, else as neither —
 * with concurrent activities and storage inside a training loop's callbacks.
 */
import { inPhase, phaseSeconds, resetPhases, usePhaseClock } from '../../util/phase';

let now = 0;
/** Advances the clock by `ms` inside whatever calls are active. */
const tick = async (ms: number) => {
  now += ms;
  await Promise.resolve();
};

beforeEach(() => {
  usePhaseClock(() => now);
  resetPhases();
});
afterAll(() => usePhaseClock(() => performance.now()));

test('idle time counts as neither; a compute call counts its own duration', async () => {
  await tick(500);
  await inPhase('compute', () => tick(2000));
  await tick(300);
  expect(phaseSeconds()).toEqual({ compute: 2, storage: 0 });
});

test('storage inside a compute call (a checkpoint saved in onStep) counts as storage, not both', async () => {
  await inPhase('compute', async () => {
    await tick(1000);
    await inPhase('storage', () => tick(250));
    await tick(1000);
  });
  expect(phaseSeconds()).toEqual({ compute: 2, storage: 0.25 });
});

test('two concurrent compute calls (two shards) count the wall time once', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const a = inPhase('compute', () => gate);
  const b = inPhase('compute', () => gate);
  await tick(1500);
  release();
  await Promise.all([a, b]);
  expect(phaseSeconds()).toEqual({ compute: 1.5, storage: 0 });
});

test('a failing call still ends its phase', async () => {
  await expect(
    inPhase('storage', async () => {
      await tick(100);
      throw new Error('upload failed');
    }),
  ).rejects.toThrow('upload failed');
  await tick(900);
  expect(phaseSeconds()).toEqual({ compute: 0, storage: 0.1 });
});
