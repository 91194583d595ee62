// LlamaModel: weights in HF names plus the inference entry points (forward with KV cache, token
// log-probs, tree-masked checkpoint scoring). Graphs are built once per (config, use, batch rows) and
// their sessions cached; T and the past length stay symbolic so one graph serves every length.
import type { LlamaConfig } from './config';
import { dims } from './config';
import { Graph, type Value } from './graph';
import {
  type LlamaInputs,
  buildLlama,
  forwardInputs,
  parameterInputs,
  parameterNames,
  parameterShapes,
  rotaryTables,
  targetLogps,
} from './llama';
import { DEFAULT_PROVIDERS, type Feeds, Session, checkProviders } from './ort';
import { cachedPromise } from '../util/cache';
import { KVCacheStores, type KVCache } from './kv-cache';
import { weightFeeds, type Weights } from './weights';

export { parameterShapes, parameterNames };

export type { Weights } from './weights';
export { initWeights, weightFeeds } from './weights';

export type { KVCache } from './kv-cache';

export interface ForwardInput {
  tokens: number[][]; // [B][S]
  positions: number[][]; // [B][S]
  attnBias: Float32Array; // [B, S, P+S]
  past?: KVCache;
}

export const MASKED = -1e9;

/** Causal attention bias for right-padded rows of the given lengths: [B, T, T]. */
export function causalBias(lengths: number[], T: number): Float32Array {
  const bias = new Float32Array(lengths.length * T * T).fill(MASKED);
  lengths.forEach((len, b) => {
    for (let q = 0; q < T; q++) bias.fill(0, (b * T + q) * T, (b * T + q) * T + Math.min(q, len - 1) + 1);
  });
  return bias;
}

function padRows(rows: number[][], T: number): BigInt64Array {
  const out = new BigInt64Array(rows.length * T);
  rows.forEach((r, b) => r.forEach((t, k) => (out[b * T + k] = BigInt(t))));
  return out;
}

export class LlamaModel {
  readonly config: LlamaConfig;
  readonly providers: readonly string[];
  private _weights: Weights;
  private readonly sessions = new Map<string, Promise<Session>>();
  private readonly caches: KVCacheStores;
  /** Inference sessions with the current weights baked in; dropped by setWeights. */
  private baked = new Map<string, Promise<Session>>();
  /** Models up to this many parameter bytes bake weights into inference graphs (protobuf caps a model at 2 GB). */
  readonly bakeLimitBytes: number;

  constructor(config: LlamaConfig, weights: Weights, options: { providers?: string[]; bakeLimitBytes?: number } = {}) {
    this.config = config;
    this.caches = new KVCacheStores(config);
    this.bakeLimitBytes = options.bakeLimitBytes ?? 256 * 2 ** 20; // each (use, batch) session holds its own copy
    this.providers = options.providers ?? DEFAULT_PROVIDERS;
    checkProviders(this.providers);
    weightFeeds(config, weights);
    this._weights = weights;
  }

  /** The current weights. Replace them with setWeights, never in place: inference graphs bake them in. */
  get weights(): Weights {
    return this._weights;
  }
  setWeights(w: Weights): void {
    weightFeeds(this.config, w);
    this._weights = w;
    const stale = [...this.baked.values()];
    this.baked = new Map();
    for (const s of stale) s.then((x) => x.release()).catch(() => undefined);
  }

  private get bakes(): boolean {
    let bytes = 0;
    for (const w of this._weights.values()) bytes += w.byteLength;
    return bytes <= this.bakeLimitBytes;
  }

  /**
   * Parameters for an inference graph: constants when baking, else graph inputs. Baked constants are
   * made on first use, so a graph that skips some weights (a presents-only prefill) does not carry them.
   */
  private inferenceParams(g: Graph): Map<string, Value> {
    if (!this.bakes) return parameterInputs(g, this.config);
    const shapes = parameterShapes(this.config);
    const weights = this._weights;
    return new (class extends Map<string, Value> {
      override get(name: string): Value | undefined {
        const shape = shapes.get(name);
        if (!super.has(name) && shape) super.set(name, g.constant(weights.get(name)!, 'float32', shape));
        return super.get(name);
      }
    })();
  }

  /** Weight feeds for inference graphs (none when the weights are baked in). */
  private inferenceFeeds(): Feeds {
    return this.bakes ? {} : weightFeeds(this.config, this._weights);
  }

  /** Session for an inference graph: baked ones are per weights version and not hash-cached. */
  private inferenceSession(key: string, build: () => Graph): Promise<Session> {
    if (!this.bakes) return this.session(key, build);
    return cachedPromise(this.baked, key, () => Session.owned(build().toBytes(), this.providers));
  }

  /**
   * A cached session for `key`, building its graph on first use. Models too large to bake their weights
   * (over bakeLimitBytes) run in low-memory sessions: their activations dominate the machine's memory.
   */
  session(key: string, build: () => Graph): Promise<Session> {
    return cachedPromise(this.sessions, key, () =>
      Session.get(build().toBytes(), this.providers, { lowMemory: !this.bakes }),
    );
  }

  private forwardSession(B: number, withPast: boolean): Promise<Session> {
    return this.inferenceSession(`forward|${B}|${withPast}`, () => {
      const g = new Graph('float32');
      const params = this.inferenceParams(g);
      const inp = forwardInputs(g, this.config, B, withPast);
      const out = buildLlama(g, this.config, params, inp);
      g.output(g.reshape(out.logits, [B, -1, this.config.vocab_size]), 'logits'); // [B, T, V]
      out.presents.forEach((p, l) => {
        g.output(p.keys, `present_key_${l}`);
        g.output(p.values, `present_value_${l}`);
      });
      return g;
    });
  }

  private logpSession(B: number): Promise<Session> {
    return this.inferenceSession(`logp|${B}`, () => {
      const g = new Graph('float32');
      const params = this.inferenceParams(g);
      const inp = forwardInputs(g, this.config, B, false);
      const rows: Value = g.input('rows', 'int64', [B, 'R']); // positions to score within each row
      const targets: Value = g.input('targets', 'int64', [B, 'R']);
      g.output(targetLogps(g, buildLlama(g, this.config, params, inp, rows).logits, targets), 'logp'); // [B, R]
      return g;
    });
  }

  /** Block-sparse checkpoint scoring (see scoreCheckpoints): log p of the S continuation rows of B rows. */
  private treeSession(B: number): Promise<Session> {
    return this.inferenceSession(`tree|${B}`, () => {
      const g = new Graph('float32');
      const { D } = dims(this.config);
      const inp: LlamaInputs = {
        tokens: g.input('tokens', 'int64', [B, 'T']),
        cos: g.input('cos', 'float32', [B, 'T', 1, D]),
        sin: g.input('sin', 'float32', [B, 'T', 1, D]),
        bias: g.input('bias', 'float32', [B, 'N', 'N']),
        tree: { split: g.input('split', 'int64', [2]), copyBias: g.input('copy_bias', 'float32', [B, 'S', 'T']) },
      };
      const targets: Value = g.input('targets', 'int64', [B, 'S']);
      g.output(targetLogps(g, buildLlama(g, this.config, this.inferenceParams(g), inp).logits, targets), 'logp'); // [B, S]
      return g;
    });
  }

  async forward(input: ForwardInput): Promise<{ logits: Float32Array; cache: KVCache }> {
    const { Hkv, D, L } = dims(this.config);
    const B = input.tokens.length;
    const S = input.tokens[0]?.length ?? 0;
    if (B === 0 || S === 0) throw new Error('forward: empty batch');
    if (input.tokens.some((r) => r.length !== S)) throw new Error('forward: all rows must have the same length');
    const P = input.past?.length ?? 0;
    if (input.past && input.past.batch !== B) throw new Error(`forward: cache batch ${input.past.batch} != ${B}`);
    if (input.attnBias.length !== B * S * (P + S)) throw new Error(`forward: attnBias must be [${B}, ${S}, ${P + S}]`);
    const rot = rotaryTables(this.config, input.positions, S);
    const feeds: Feeds = {
      ...this.inferenceFeeds(),
      tokens: { data: padRows(input.tokens, S), dims: [B, S] },
      cos: { data: rot.cos, dims: rot.dims },
      sin: { data: rot.sin, dims: rot.dims },
      bias: { data: input.attnBias, dims: [B, S, P + S] },
    };
    const store = input.past && P > 0 ? this.caches.storeFor(input.past, S) : undefined;
    if (store) {
      const Cap = store.capacity;
      // The bias widened to the buffer: columns P..Cap-1 are unwritten (or belong to another branch) and masked.
      const bias = new Float32Array(B * S * (Cap + S)).fill(MASKED);
      for (let r = 0; r < B * S; r++) {
        bias.set(input.attnBias.subarray(r * (P + S), r * (P + S) + P), r * (Cap + S));
        bias.set(input.attnBias.subarray(r * (P + S) + P, (r + 1) * (P + S)), r * (Cap + S) + Cap);
      }
      feeds.bias = { data: bias, dims: [B, S, Cap + S] };
      feeds.past_split = { data: new BigInt64Array([BigInt(Cap), BigInt(S)]), dims: [2] };
      for (let l = 0; l < L; l++) {
        feeds[`past_key_${l}`] = { data: store.keys[l]!, dims: [B, Hkv, Cap, D] };
        feeds[`past_value_${l}`] = { data: store.values[l]!, dims: [B, Hkv, Cap, D] };
      }
    }
    const out = await (await this.forwardSession(B, !!store)).run(feeds);
    const logits = out.logits!.data as Float32Array;
    if (!store) {
      const keys: Float32Array[] = [];
      const values: Float32Array[] = [];
      for (let l = 0; l < L; l++) {
        keys.push(out[`present_key_${l}`]!.data as Float32Array);
        values.push(out[`present_value_${l}`]!.data as Float32Array);
      }
      return { logits, cache: this.caches.view({ keys, values, batch: B, capacity: S, filled: S }, S) };
    }
    // Append this step's columns: [B, Hkv, S, D] into columns P..P+S-1 of [B, Hkv, Cap, D].
    const Cap = store.capacity;
    for (let l = 0; l < L; l++) {
      for (const [src, dst] of [
        [out[`present_key_${l}`]!.data as Float32Array, store.keys[l]!],
        [out[`present_value_${l}`]!.data as Float32Array, store.values[l]!],
      ] as const) {
        for (let r = 0; r < B * Hkv; r++) dst.set(src.subarray(r * S * D, (r + 1) * S * D), (r * Cap + P) * D);
      }
    }
    store.filled = P + S;
    return { logits, cache: this.caches.view(store, P + S) };
  }

  /**
   * Runs the log-prob graph on right-padded sequences; `picks` are (flat position b·T + t, target token)
   * pairs and the result holds log p(target) at each, in order.
   */
  async rowLogps(
    seqs: { tokens: number[]; positions: number[] }[],
    bias: Float32Array,
    T: number,
    picks: [number, number][],
  ): Promise<Float32Array> {
    const B = seqs.length;
    // Rows score equally many positions; short ones repeat their first pick and the extra results are dropped.
    const perRow = seqs.map(() => [] as number[]);
    picks.forEach(([flat], k) => perRow[Math.floor(flat / T)]!.push(k));
    const R = Math.max(1, ...perRow.map((r) => r.length));
    const rows = new BigInt64Array(B * R);
    const targets = new BigInt64Array(B * R);
    const slot = new Int32Array(picks.length);
    perRow.forEach((ks, b) => {
      for (let j = 0; j < R; j++) {
        const k = ks[Math.min(j, ks.length - 1)];
        if (k === undefined) continue;
        rows[b * R + j] = BigInt(picks[k]![0] - b * T);
        targets[b * R + j] = BigInt(picks[k]![1]);
        if (j < ks.length) slot[k] = b * R + j;
      }
    });
    const rot = rotaryTables(
      this.config,
      seqs.map((r) => r.positions),
      T,
    );
    const out = await (
      await this.logpSession(B)
    ).run({
      ...this.inferenceFeeds(),
      tokens: {
        data: padRows(
          seqs.map((r) => r.tokens),
          T,
        ),
        dims: [B, T],
      },
      rows: { data: rows, dims: [B, R] },
      targets: { data: targets, dims: [B, R] },
      cos: { data: rot.cos, dims: rot.dims },
      sin: { data: rot.sin, dims: rot.dims },
      bias: { data: bias, dims: [B, T, T] },
    });
    const logp = out.logp!.data as Float32Array;
    return Float32Array.from(slot, (at) => logp[at]!);
  }

  async tokenLogps(seqs: { tokens: number[]; start: number }[], maxRows = 8): Promise<number[][]> {
    const result: number[][] = [];
    for (let c = 0; c < seqs.length; c += maxRows) {
      const chunk = seqs.slice(c, c + maxRows);
      for (const s of chunk)
        if (s.start < 1 || s.start > s.tokens.length)
          throw new Error(`tokenLogps: start ${s.start} must be in [1, ${s.tokens.length}]`);
      const T = Math.max(...chunk.map((s) => s.tokens.length - 1), 1);
      const rows = chunk.map((s) => ({
        tokens: s.tokens.slice(0, -1),
        positions: s.tokens.slice(0, -1).map((_, k) => k),
      }));
      const picks: [number, number][] = [];
      chunk.forEach((s, b) => {
        for (let t = s.start; t < s.tokens.length; t++) picks.push([b * T + t - 1, s.tokens[t]!]);
      });
      if (picks.length === 0) {
        chunk.forEach(() => result.push([]));
        continue;
      }
      const logp = await this.rowLogps(
        rows,
        causalBias(
          rows.map((r) => Math.max(1, r.tokens.length)),
          T,
        ),
        T,
        picks,
      );
      let at = 0;
      chunk.forEach((s) => {
        const n = s.tokens.length - s.start;
        result.push(Array.from(logp.subarray(at, at + n)));
        at += n;
      });
    }
    return result;
  }

  /**
   * Mean log p(target) after each checkpoint (a prefix length) of each item's context, equal to one
   * tokenLogps forward per prefix. One forward per chunk of items; each row holds the context once
   * (up to the last checkpoint - 1), then one copy per checkpoint c of [context[c-1], target[0..m-2]] at
   * positions c-1.., which sees context[0 : c-1] and itself causally; its rows give log p(target[0..m-1]).
   * Attention is block-sparse (see treeAttention in llama.ts): context rows score only context keys,
   * so the dense (context + copies)² score matrix of a plain tree mask is never formed, and the last
   * layer runs queries, MLP and LM head on the copy rows only.
   */
  async scoreCheckpoints(
    items: { context: number[]; checkpoints: number[]; target: number[] }[],
    maxRows = 8,
  ): Promise<number[][]> {
    return (await this.checkpointScores(items, maxRows)).map((cps) => cps.map((c) => c.meanLogp));
  }

  /**
   * scoreCheckpoints with, per checkpoint, also the mean per-token probability of the target (the mean
   * of exp(log p) over its tokens, in float64 from the graph's float32 token log-probs): the
   * `likelihood` reward kind's score, which is not exp(mean log p).
   */
  async checkpointScores(
    items: { context: number[]; checkpoints: number[]; target: number[] }[],
    maxRows = 8,
  ): Promise<{ meanLogp: number; meanProb: number }[][]> {
    for (const { context, checkpoints, target } of items) {
      if (target.length === 0) throw new Error('scoreCheckpoints: empty target');
      for (const cp of checkpoints)
        if (!Number.isInteger(cp) || cp < 1 || cp > context.length)
          throw new Error(`scoreCheckpoints: checkpoint ${cp} must be an integer in [1, ${context.length}]`);
    }
    const result: { meanLogp: number; meanProb: number }[][] = [];
    for (let c = 0; c < items.length; c += maxRows) {
      const chunk = items.slice(c, c + maxRows);
      const B = chunk.length;
      if (chunk.every((it) => it.checkpoints.length === 0)) {
        chunk.forEach(() => result.push([]));
        continue;
      }
      // Columns 0..n-1: context[0 : max checkpoint - 1] (at least one token), right-padded.
      const lens = chunk.map((it) => Math.max(1, Math.max(1, ...it.checkpoints) - 1));
      const n = Math.max(...lens);
      // Columns n..n+S-1: copy j of an item fills j·M .. j·M + m - 1 (M = longest target).
      const M = Math.max(...chunk.map((it) => it.target.length));
      const S = M * Math.max(...chunk.map((it) => it.checkpoints.length));
      const T = n + S;
      const tokens = new BigInt64Array(B * T);
      const targets = new BigInt64Array(B * S);
      const positions = chunk.map(() => new Array<number>(T).fill(0));
      const copyBias = new Float32Array(B * S * T).fill(MASKED);
      for (let r = 0; r < B * S; r++) copyBias[r * T + n + (r % S)] = 0; // unused rows see themselves (no NaN)
      chunk.forEach(({ context, checkpoints, target }, b) => {
        for (let k = 0; k < lens[b]!; k++) {
          tokens[b * T + k] = BigInt(context[k]!);
          positions[b]![k] = k;
        }
        checkpoints.forEach((cp, j) => {
          for (let k = 0; k < target.length; k++) {
            const s = j * M + k;
            tokens[b * T + n + s] = BigInt(k === 0 ? context[cp - 1]! : target[k - 1]!);
            targets[b * S + s] = BigInt(target[k]!);
            positions[b]![n + s] = cp - 1 + k;
            const row = (b * S + s) * T;
            copyBias.fill(0, row, row + cp - 1);
            copyBias.fill(0, row + n + j * M, row + n + s + 1);
          }
        });
      });
      const rot = rotaryTables(this.config, positions, T);
      const logp = (
        await (
          await this.treeSession(B)
        ).run({
          ...this.inferenceFeeds(),
          tokens: { data: tokens, dims: [B, T] },
          targets: { data: targets, dims: [B, S] },
          cos: { data: rot.cos, dims: rot.dims },
          sin: { data: rot.sin, dims: rot.dims },
          bias: { data: causalBias(lens, n), dims: [B, n, n] },
          copy_bias: { data: copyBias, dims: [B, S, T] },
          split: { data: new BigInt64Array([BigInt(n), BigInt(S)]), dims: [2] },
        })
      ).logp!.data as Float32Array;
      chunk.forEach(({ checkpoints, target }, b) =>
        result.push(
          checkpoints.map((_, j) => {
            let sum = 0;
            let sumProb = 0;
            for (let k = 0; k < target.length; k++) {
              const lp = logp[b * S + j * M + k]!;
              sum += lp;
              sumProb += Math.exp(lp);
            }
            return { meanLogp: sum / target.length, meanProb: sumProb / target.length };
          }),
        ),
      );
    }
    return result;
  }
}
