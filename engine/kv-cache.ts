// The KV cache of incremental decoding: per layer [B, Hkv, capacity, D] buffers that decode steps append
// to in place, and the KVCache views `LlamaModel.forward` hands out.
import { dims, type LlamaConfig } from './config';

export interface KVCache {
  keys: Float32Array[];
  values: Float32Array[];
  batch: number;
  length: number;
} // per layer [B, Hkv, P, D]

/**
 * Where forward keeps a cache between decode steps: per layer [B, Hkv, capacity, D], of which the first
 * `filled` columns are written. Decoding appends each step's keys/values in place and feeds the whole
 * buffer (the columns past the cache length are masked out), so a step copies only its own new columns
 * instead of the whole cache (once into a Concat, once out as an output).
 */
export interface CacheStore {
  keys: Float32Array[];
  values: Float32Array[];
  batch: number;
  capacity: number;
  filled: number;
}

/** Capacity grows in blocks: masked spare columns cost a little attention, regrowing copies the cache. */
const CACHE_BLOCK = 64;

/** Copies per-layer [B, Hkv, from, D] blocks (the first `n` columns) into [B, Hkv, to, D] buffers. */
function restride(src: Float32Array, rows: number, from: number, to: number, n: number, D: number): Float32Array {
  const dst = new Float32Array(rows * to * D);
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * from * D, (r * from + n) * D), r * to * D);
  return dst;
}

/** The buffers behind the caches one model hands out. */
export class KVCacheStores {
  /** Caches returned by forward, mapped to the buffers they view (their keys/values materialise on first read). */
  private readonly stores = new WeakMap<KVCache, CacheStore>();

  constructor(private readonly config: LlamaConfig) {}

  /** A cache of `length` columns viewing `store`. */
  view(store: CacheStore, length: number): KVCache {
    const { Hkv, D } = dims(this.config);
    const rows = store.batch * Hkv;
    let keys: Float32Array[] | undefined;
    let values: Float32Array[] | undefined;
    // Later steps may write columns ≥ length of the shared buffers, never the first `length` ones, so a
    // view stays valid; a dense copy is made only when a caller reads keys/values (e.g. to compact rows).
    const cache: KVCache = {
      batch: store.batch,
      length,
      get keys() {
        return (keys ??= store.keys.map((k) =>
          store.capacity === length ? k : restride(k, rows, store.capacity, length, length, D),
        ));
      },
      get values() {
        return (values ??= store.values.map((v) =>
          store.capacity === length ? v : restride(v, rows, store.capacity, length, length, D),
        ));
      },
    };
    this.stores.set(cache, store);
    return cache;
  }

  /** A store that `past` can be extended in by S columns: its own when it is the latest view of it and has room, else a copy. */
  storeFor(past: KVCache, S: number): CacheStore {
    const { Hkv, D } = dims(this.config);
    const P = past.length;
    const own = this.stores.get(past);
    if (own && own.filled === P && own.capacity >= P + S) return own;
    const capacity = Math.ceil((P + S) / CACHE_BLOCK) * CACHE_BLOCK;
    const rows = past.batch * Hkv;
    const from = own ? own.capacity : P;
    const keys = (own ? own.keys : past.keys).map((k) => restride(k, rows, from, capacity, P, D));
    const values = (own ? own.values : past.values).map((v) => restride(v, rows, from, capacity, P, D));
    return { keys, values, batch: past.batch, capacity, filled: P };
  }
}
