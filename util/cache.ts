/** Memoised async loads (tokenizers, models, datasets, ONNX sessions): one load per key, concurrent callers share it. */

/**
 * The cached promise for `key`, made by `make` on first use. A rejected load is forgotten, so the next
 * call tries again instead of returning the same failure forever.
 */
export function cachedPromise<K, V>(cache: Map<K, Promise<V>>, key: K, make: () => Promise<V>): Promise<V> {
  let p = cache.get(key);
  if (!p) {
    p = make();
    cache.set(key, p);
    p.catch(() => {
      if (cache.get(key) === p) cache.delete(key);
    });
  }
  return p;
}
