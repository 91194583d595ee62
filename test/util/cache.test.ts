import { cachedPromise } from '../../util/cache';

/** A promise settled from outside, so the test decides when a load finishes. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets queued promise callbacks (the cache's rejection handler) run. */
const settle = () => new Promise((r) => setImmediate(r));

describe('cachedPromise', () => {
  // Catches: a load made again on every call (no memo), or a memo that is not stored in the map.
  it('loads once per key and hands every caller the same promise, also while it is pending', async () => {
    const cache = new Map<string, Promise<number>>();
    const d = deferred<number>();
    let made = 0;
    const make = () => {
      made += 1;
      return d.promise;
    };
    const first = cachedPromise(cache, 'a', make);
    const second = cachedPromise(cache, 'a', make); // before the load finishes
    expect(second).toBe(first);
    expect(cache.get('a')).toBe(first);
    d.resolve(7);
    expect(await first).toBe(7);
    expect(cachedPromise(cache, 'a', make)).toBe(first); // and after
    expect(made).toBe(1);
    // Another key is another load.
    expect(await cachedPromise(cache, 'b', () => Promise.resolve(8))).toBe(8);
    expect(cache.size).toBe(2);
  });

  // Catches: a failed load kept in the cache, so every later call returns the same failure forever.
  it('forgets a rejected load, so the next call tries again', async () => {
    const cache = new Map<string, Promise<string>>();
    const failing = cachedPromise(cache, 'k', () => Promise.reject(new Error('disk busy')));
    await expect(failing).rejects.toThrow('disk busy');
    await settle();
    expect(cache.has('k')).toBe(false);
    let made = 0;
    const retried = cachedPromise(cache, 'k', () => {
      made += 1;
      return Promise.resolve('ok');
    });
    expect(await retried).toBe('ok');
    expect(made).toBe(1);
    expect(cache.get('k')).toBe(retried);
  });

  // Catches: the late rejection of an evicted load deleting the newer load that replaced it under the same key.
  it('does not let an old load that fails late remove the entry that replaced it', async () => {
    const cache = new Map<string, Promise<string>>();
    const old = deferred<string>();
    const stale = cachedPromise(cache, 'k', () => old.promise);
    cache.delete('k'); // evicted by its owner while still loading
    const fresh = cachedPromise(cache, 'k', () => Promise.resolve('new'));
    old.reject(new Error('old load failed'));
    await expect(stale).rejects.toThrow('old load failed');
    await settle();
    expect(cache.get('k')).toBe(fresh);
    let made = 0;
    expect(
      cachedPromise(cache, 'k', () => {
        made += 1;
        return Promise.resolve('third');
      }),
    ).toBe(fresh);
    expect(made).toBe(0);
  });
});
