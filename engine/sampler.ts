/**
 * Batched sampling: one prefill forward over right-aligned prompts, then one decode forward per new
 * token with the KV cache.
 *
 * The token at step t of a request is chosen with u = uniform(seed, request.key, t), so it depends only
 * on (seed, key, t) and the model's logits for that request — not on which other requests share the
 * batch, their order, or a restart. (Logits themselves can differ in the last float bits between batch
 * shapes; that can flip a choice only when u lands within ~1e-6 of a boundary of the sampling CDF.)
 */
import { dims } from './config';
import { type KVCache, type LlamaModel, MASKED } from './model';
import { uniform } from './rng';
import { stopIds, type Tokenizer } from './tokenizer';

export interface SampleOptions {
  temperature: number; // 0 = greedy
  topK: number; // 0 = off
  topP: number; // 1 = off
  maxNewTokens: number;
  /** Generation ends at the first occurrence of any of these in the generated text; it is not kept. */
  stop?: string[];
  seed: number;
  /** Rows per forward (default 16); larger batches use the CPU better but hold more KV cache. */
  batchSize?: number;
}

export interface SampleRequest {
  prompt: number[];
  key: number[]; // e.g. [iteration, promptIndex, sampleIndex]
}

export interface SampleResult {
  /**
   * Generated ids. Ends with one of the tokenizer's EOS ids (`stopIds`) when finish is 'eos' (the policy
   * chose to stop, and training should see that choice); with 'stop', the tokens that reach into the
   * stop string are cut off.
   */
  tokens: number[];
  /** decode(tokens) without a final EOS: exactly the text the kept tokens spell. */
  text: string;
  /** log p of each kept token under the unmodified model distribution (temperature 1, no top-k/p). */
  logps: number[];
  finish: 'eos' | 'stop' | 'length';
}

function validate(requests: SampleRequest[], options: SampleOptions, vocabSize: number, maxPositions: number): void {
  const { temperature, topK, topP, maxNewTokens, seed, stop = [], batchSize = 16 } = options;
  const bad = (what: string, got: unknown) => {
    throw new Error(`sample: ${what}, got ${JSON.stringify(got)}`);
  };
  if (!Number.isFinite(temperature) || temperature < 0) bad('temperature must be a finite number >= 0', temperature);
  if (!Number.isInteger(topK) || topK < 0) bad('topK must be an integer >= 0 (0 = off)', topK);
  if (!(topP > 0 && topP <= 1)) bad('topP must be in (0, 1] (1 = off)', topP);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) bad('maxNewTokens must be an integer >= 0', maxNewTokens);
  if (!Number.isSafeInteger(seed) || seed < 0) bad('seed must be a non-negative safe integer', seed);
  if (!Number.isInteger(batchSize) || batchSize < 1) bad('batchSize must be an integer >= 1', batchSize);
  stop.forEach((s, i) => {
    if (typeof s !== 'string' || s.length === 0) bad(`stop[${i}] must be a non-empty string`, s);
  });
  requests.forEach((r, i) => {
    if (r.prompt.length === 0) bad(`requests[${i}].prompt must not be empty (start it with BOS)`, r.prompt);
    const outside = r.prompt.find((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize);
    if (outside !== undefined)
      bad(`requests[${i}].prompt has token ${outside} outside the vocabulary [0, ${vocabSize})`, outside);
    if (r.prompt.length + maxNewTokens > maxPositions) {
      bad(
        `requests[${i}]: prompt length ${r.prompt.length} + maxNewTokens ${maxNewTokens} exceeds max_position_embeddings ${maxPositions}`,
        r.prompt.length + maxNewTokens,
      );
    }
  });
}

/**
 * Picks one token from a logits row with the uniform number `u` (inverse CDF), and returns its
 * log-probability under the unmodified distribution. The CDF runs over ids in order, or in probability
 * order (ties: lower id first) when top-k/top-p filter, so the choice is a deterministic function of
 * (logits, options, u). Only ids below `choosable` can be picked: a model's vocabulary may be padded
 * past the ids its tokenizer can decode.
 */
export function chooseToken(
  logits: Float32Array,
  options: Pick<SampleOptions, 'temperature' | 'topK' | 'topP'>,
  u: number,
  choosable = logits.length,
): { token: number; logp: number } {
  let full = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > full) full = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - full);
  const logZ = full + Math.log(sum);
  const logp = (token: number) => logits[token]! - logZ;

  const V = Math.min(choosable, logits.length);
  let max = -Infinity;
  let best = 0;
  for (let i = 0; i < V; i++)
    if (logits[i]! > max) {
      max = logits[i]!;
      best = i;
    }

  const { temperature, topK, topP } = options;
  if (temperature === 0 || topK === 1) return { token: best, logp: logp(best) };

  // Probabilities at this temperature, relative to the best token (which has weight 1).
  const weight = new Float64Array(V);
  for (let i = 0; i < V; i++) weight[i] = Math.exp((logits[i]! - max) / temperature);
  if ((topK <= 0 || topK >= V) && topP >= 1) {
    // No filter: walk the CDF in id order, without building and sorting an index (vocabularies reach 150k).
    let total = 0;
    for (let i = 0; i < V; i++) total += weight[i]!;
    const target = u * total;
    let cum = 0;
    for (let i = 0; i < V; i++) {
      cum += weight[i]!;
      if (target < cum) return { token: i, logp: logp(i) };
    }
    return { token: V - 1, logp: logp(V - 1) }; // only reachable through rounding when u is within 1 ulp of 1
  }
  let order: number[] = Array.from({ length: V }, (_, i) => i);
  order.sort((a, b) => weight[b]! - weight[a]! || a - b);
  if (topK > 0) order = order.slice(0, topK);
  if (topP < 1) {
    // Keep the smallest prefix whose mass reaches topP (the token that crosses it is kept).
    const mass = order.reduce((s, i) => s + weight[i]!, 0);
    let cum = 0;
    let keep = 0;
    while (keep < order.length && cum < topP * mass) cum += weight[order[keep++]!]!;
    order = order.slice(0, Math.max(1, keep));
  }
  const total = order.reduce((s, i) => s + weight[i]!, 0);
  const target = u * total;
  let cum = 0;
  for (const i of order) {
    cum += weight[i]!;
    if (target < cum) return { token: i, logp: logp(i) };
  }
  const last = order[order.length - 1]!; // only reachable through rounding when u is within 1 ulp of 1
  return { token: last, logp: logp(last) };
}

/** Per-request decoding state. */
interface Row {
  index: number; // into requests / results
  request: SampleRequest;
  tokens: number[];
  logps: number[];
  text: string; // kept up to date only when there are stop strings to look for
  offset: number; // cache column where this row's prompt starts
  finish?: SampleResult['finish']; // set when the row is done
}

/** Finds the first stop string in `text` at or after `from`; returns its index or -1. */
function findStop(text: string, stops: string[], from: number): number {
  let first = -1;
  for (const s of stops) {
    const at = text.indexOf(s, Math.max(0, from - s.length));
    if (at >= 0 && (first < 0 || at < first)) first = at;
  }
  return first;
}

/** Drops the tokens that reach into the stop string at `stopAt`, keeping text === decode(tokens). */
function trimAtStop(row: Row, tokenizer: Tokenizer, stopAt: number): void {
  const wanted = row.text.slice(0, stopAt);
  let keep = row.tokens.length;
  let text = row.text;
  while (keep > 0 && !(text.length <= wanted.length && wanted.startsWith(text)))
    text = tokenizer.decode(row.tokens.slice(0, --keep));
  if (keep === 0) text = '';
  row.tokens.length = keep;
  row.logps.length = keep;
  row.text = text;
}

/** Copies the given cache rows (filling the rest of `slots` with zeros) and drops columns before `from`. */
function compactCache(cache: KVCache, rows: number[], slots: number, from: number, Hkv: number, D: number): KVCache {
  const P = cache.length;
  const Pn = P - from;
  const copy = (src: Float32Array): Float32Array => {
    const dst = new Float32Array(slots * Hkv * Pn * D);
    rows.forEach((r, b) => {
      for (let h = 0; h < Hkv; h++) {
        const s = ((r * Hkv + h) * P + from) * D;
        dst.set(src.subarray(s, s + Pn * D), (b * Hkv + h) * Pn * D);
      }
    });
    return dst;
  };
  return { keys: cache.keys.map(copy), values: cache.values.map(copy), batch: slots, length: Pn };
}

const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** Batch sizes come from a few buckets so that only a few graphs (one per batch size) get compiled. */
function bucket(n: number, batchSize: number): number {
  return Math.min(batchSize, nextPow2(n));
}

async function sampleChunk(
  model: LlamaModel,
  tokenizer: Tokenizer,
  rows: Row[],
  options: SampleOptions,
  finished: () => void,
): Promise<void> {
  const { Hkv, D, V } = dims(model.config);
  const stops = options.stop ?? [];
  const eos = new Set(stopIds(tokenizer));
  const { maxNewTokens, seed } = options;
  let slots = bucket(rows.length, options.batchSize ?? 16);
  let slotRows: (Row | undefined)[] = Array.from({ length: slots }, (_, b) => rows[b]);

  // Prefill: prompts right-aligned so every row's next token sits in the last column.
  const S = Math.max(...rows.map((r) => r.request.prompt.length));
  const tokens: number[][] = [];
  const positions: number[][] = [];
  const bias = new Float32Array(slots * S * S).fill(MASKED);
  slotRows.forEach((row, b) => {
    const prompt = row?.request.prompt ?? [];
    const off = S - prompt.length;
    if (row) row.offset = off;
    tokens.push([...new Array<number>(off).fill(tokenizer.padId), ...prompt]);
    positions.push(Array.from({ length: S }, (_, k) => Math.max(0, k - off)));
    for (let q = 0; q < S; q++) {
      if (q < off)
        bias[(b * S + q) * S + q] = 0; // padding rows attend to themselves only (no NaN)
      else for (let k = off; k <= q; k++) bias[(b * S + q) * S + k] = 0;
    }
  });
  let { logits, cache } = await model.forward({ tokens, positions, attnBias: bias });
  let step = S; // logits row stride per slot: S at prefill, 1 when decoding

  for (let t = 0; t < maxNewTokens; t++) {
    slotRows.forEach((row, b) => {
      if (!row || row.finish) return;
      const row0 = (b * step + step - 1) * V;
      const { token, logp } = chooseToken(
        logits.subarray(row0, row0 + V),
        options,
        uniform(seed, row.request.key, t),
        tokenizer.vocabSize,
      );
      row.tokens.push(token);
      row.logps.push(logp);
      if (eos.has(token)) {
        row.finish = 'eos';
        return void finished();
      }
      let at = -1;
      if (stops.length > 0) {
        const before = row.text.length;
        row.text = tokenizer.decode(row.tokens);
        at = findStop(row.text, stops, before - 4); // - 4: completing a multi-byte character rewrites the tail
      }
      if (at >= 0) {
        trimAtStop(row, tokenizer, at);
        row.finish = 'stop';
        return void finished();
      }
      if (row.tokens.length === maxNewTokens) {
        row.finish = 'length';
        finished();
      }
    });
    const active = slotRows.filter((r): r is Row => r !== undefined && !r.finish);
    if (active.length === 0 || t === maxNewTokens - 1) break;

    if (active.length <= slots / 2) {
      // Shrink the batch (and drop cache columns no remaining row can see) once half the rows are done.
      const keep = active.map((r) => slotRows.indexOf(r));
      const from = Math.min(...active.map((r) => r.offset));
      slots = bucket(active.length, options.batchSize ?? 16);
      cache = compactCache(cache, keep, slots, from, Hkv, D);
      active.forEach((r) => {
        r.offset -= from;
      });
      slotRows = Array.from({ length: slots }, (_, b) => active[b]);
    }
    const P = cache.length;
    const decodeBias = new Float32Array(slots * (P + 1)).fill(MASKED);
    slotRows.forEach((row, b) => {
      const from = row && !row.finish ? row.offset : P;
      decodeBias.fill(0, b * (P + 1) + from, (b + 1) * (P + 1));
    });
    ({ logits, cache } = await model.forward({
      tokens: slotRows.map((r) => [r && !r.finish ? r.tokens[r.tokens.length - 1]! : tokenizer.padId]),
      positions: slotRows.map((r) => [r && !r.finish ? r.request.prompt.length + r.tokens.length - 1 : 0]),
      attnBias: decodeBias,
      past: cache,
    }));
    step = 1;
  }
}

export async function sample(
  model: LlamaModel,
  tokenizer: Tokenizer,
  requests: SampleRequest[],
  options: SampleOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<SampleResult[]> {
  validate(requests, options, model.config.vocab_size, model.config.max_position_embeddings);
  const rows: Row[] = requests.map((request, index) => ({
    index,
    request,
    tokens: [],
    logps: [],
    text: '',
    offset: 0,
  }));
  let done = 0;
  const finished = () => onProgress?.(++done, rows.length);
  if (options.maxNewTokens > 0) {
    // Similar prompt lengths share a batch, which keeps left padding (wasted compute) small.
    const order = [...rows].sort((a, b) => b.request.prompt.length - a.request.prompt.length || a.index - b.index);
    const batchSize = options.batchSize ?? 16;
    for (let c = 0; c < order.length; c += batchSize)
      await sampleChunk(model, tokenizer, order.slice(c, c + batchSize), options, finished);
  } else {
    rows.forEach((row) => {
      row.finish = 'length';
      finished();
    });
  }
  return rows.map((row) => ({
    tokens: row.tokens,
    text: tokenizer.decode(row.finish === 'eos' ? row.tokens.slice(0, -1) : row.tokens),
    logps: row.logps,
    finish: row.finish ?? 'length',
  }));
}
