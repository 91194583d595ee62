// Llama graph construction. Activations stay 2-D as [N, C] (N = B·T rows) so every projection is one
// GEMM against the HF-layout weight with transB (no weight transposes). q/k/v and gate/up stay separate
// GEMMs: fusing them needs a strided Split of the output, which costs ORT more than it saves. Attention runs in a [B, Hkv, G, T, D] layout so that
// grouped query heads share K/V through MatMul broadcasting instead of materialised copies.
import { type LlamaConfig, dims, familyTraits } from './config';
import { type Dim, type FloatType, Graph, type Value } from './graph';
import { isAdapterName, loraScale, loraShapes } from './lora';
import { ropeFrequencies } from './rope';

export function parameterNames(config: LlamaConfig): string[] {
  const { qkvBias, qkNorm } = familyTraits(config);
  const names = ['model.embed_tokens.weight'];
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    names.push(
      `${p}.input_layernorm.weight`,
      `${p}.self_attn.q_proj.weight`,
      `${p}.self_attn.k_proj.weight`,
      `${p}.self_attn.v_proj.weight`,
      ...(qkvBias ? ['q', 'k', 'v'].map((x) => `${p}.self_attn.${x}_proj.bias`) : []),
      ...(qkNorm ? [`${p}.self_attn.q_norm.weight`, `${p}.self_attn.k_norm.weight`] : []),
      `${p}.self_attn.o_proj.weight`,
      `${p}.post_attention_layernorm.weight`,
      `${p}.mlp.gate_proj.weight`,
      `${p}.mlp.up_proj.weight`,
      `${p}.mlp.down_proj.weight`,
    );
  }
  names.push('model.norm.weight');
  if (!config.tie_word_embeddings) names.push('lm_head.weight');
  return names;
}

/** HF shapes (a Linear weight is [out, in]), then the LoRA adapter's when the config has one. */
export function parameterShapes(config: LlamaConfig): Map<string, number[]> {
  const base = baseShapes(config);
  return config.lora ? new Map([...base, ...loraShapes(base, config.lora)]) : base;
}

/**
 * The parameters a step trains: under LoRA only the adapter (the base weights are frozen inputs, with no
 * gradient, no moments and no update), else all of them.
 */
export function trainableShapes(config: LlamaConfig): Map<string, number[]> {
  const all = parameterShapes(config);
  return config.lora ? new Map([...all].filter(([name]) => isAdapterName(name))) : all;
}

function baseShapes(config: LlamaConfig): Map<string, number[]> {
  const { C, I, H, Hkv, D, V } = dims(config);
  const shapes = new Map<string, number[]>();
  for (const name of parameterNames(config)) {
    const leaf = name.split('.').slice(-2, -1)[0]!;
    const shape =
      name === 'model.embed_tokens.weight' || name === 'lm_head.weight'
        ? [V, C]
        : leaf === 'q_norm' || leaf === 'k_norm'
          ? [D]
          : name.endsWith('.bias')
            ? [(leaf === 'q_proj' ? H : Hkv) * D]
            : leaf.endsWith('norm')
              ? [C]
              : leaf === 'q_proj'
                ? [H * D, C]
                : leaf === 'k_proj' || leaf === 'v_proj'
                  ? [Hkv * D, C]
                  : leaf === 'o_proj'
                    ? [C, H * D]
                    : leaf === 'gate_proj' || leaf === 'up_proj'
                      ? [I, C]
                      : [C, I]; // down_proj
    shapes.set(name, shape);
  }
  return shapes;
}

export interface LlamaInputs {
  tokens: Value; // [B, T] int64
  cos: Value; // [B, T, 1, D]
  sin: Value; // [B, T, 1, D]
  bias: Value; // [B, T, L] additive attention bias, L = P + T
  past?: { keys: Value; values: Value }[]; // per layer [B, Hkv, P, D]
  pastSplit?: Value; // [2] int64 = [P, T], required with past: splits the attention probabilities
  /**
   * Block-sparse scoring layout: each row is N context tokens then S continuation tokens. `bias` is then
   * the context's [B, N, N] and `copyBias` the continuations' [B, S, T] over all T = N + S columns; the
   * context rows never score against continuation keys, and the last layer computes only the S rows.
   */
  tree?: { split: Value; copyBias: Value }; // split: [2] int64 = [N, S]
}

export interface LlamaOutputs {
  logits: Value; // [N, V]
  presents: { keys: Value; values: Value }[]; // per layer [B, Hkv, T, D]: this call's keys/values only (the caller appends them to its cache)
}

/** Declares the parameters as graph inputs named by their HF names. */
export function parameterInputs(g: Graph, config: LlamaConfig): Map<string, Value> {
  const params = new Map<string, Value>();
  for (const [name, shape] of parameterShapes(config)) params.set(name, g.input(name, g.floatType, shape));
  return params;
}

/** Declares the standard forward inputs for a batch of B rows (T and the past length P stay symbolic). */
export function forwardInputs(g: Graph, config: LlamaConfig, B: number, withPast: boolean, pastBatch = B): LlamaInputs {
  const { Hkv, D, L } = dims(config);
  const ft: FloatType = g.floatType;
  const Lk: Dim = withPast ? '(P+T)' : 'T'; // the name Graph.concat gives P + T
  return {
    tokens: g.input('tokens', 'int64', [B, 'T']),
    cos: g.input('cos', ft, [B, 'T', 1, D]),
    sin: g.input('sin', ft, [B, 'T', 1, D]),
    bias: g.input('bias', ft, [B, 'T', Lk]),
    past: withPast
      ? Array.from({ length: L }, (_, l) => ({
          keys: g.input(`past_key_${l}`, ft, [pastBatch, Hkv, 'P', D]), // pastBatch 1: rows share one cache (broadcast)
          values: g.input(`past_value_${l}`, ft, [pastBatch, Hkv, 'P', D]),
        }))
      : undefined,
    pastSplit: withPast ? g.input('past_split', 'int64', [2]) : undefined,
  };
}

function rmsNorm(g: Graph, x: Value, w: Value, eps: number): Value {
  const ms = g.reduceMean(g.mul(x, x), [-1], true); // [N, 1]
  return g.mul(g.mul(x, g.reciprocal(g.sqrt(g.add(ms, g.scalar(eps))))), w); // [N, C]
}

/** rotate_half as a constant signed permutation R ([D, D]): rotate_half(x) = x·R. */
function rotateHalf(g: Graph, D: number): Value {
  const r = new Array<number>(D * D).fill(0);
  for (let j = 0; j < D / 2; j++) {
    r[(j + D / 2) * D + j] = -1; // out[j] = -x[j + D/2]
    r[j * D + j + D / 2] = 1; // out[j + D/2] = x[j]
  }
  return g.constant(r, g.floatType, [D, D]);
}

// rotate_half as one [N·h, D]×[D, D] GEMM instead of Split/Concat (ORT's strided Split is slow); the
// operand is flattened to 2-D first because ORT runs a 4-D×2-D MatMul as many tiny products.
function rope(g: Graph, x2: Value, cos: Value, sin: Value, R: Value, B: number, h: number, D: number): Value {
  const x = g.reshape(x2, [B, -1, h, D]); // [B, T, h, D]
  const rotated = g.reshape(g.matmul(g.reshape(x2, [-1, D]), R), [B, -1, h, D]); // [B, T, h, D]
  return g.add(g.mul(x, cos), g.mul(rotated, sin)); // [B, T, h, D]
}

/**
 * The decoder. With `rows` ([B, R] int64 positions t within each batch row) the last
 * layer computes queries, MLP and LM head for those positions only (every position still supplies keys
 * and values): scoring reads few positions, which makes tree-masked scoring markedly cheaper.
 */
export function buildLlama(
  g: Graph,
  config: LlamaConfig,
  params: Map<string, Value>,
  inp: LlamaInputs,
  rows?: Value,
): LlamaOutputs {
  const out = decoder(g, config, params, inp, rows, false);
  return { logits: out.logits!, presents: out.presents };
}

/**
 * Only the keys/values of every layer (a prefill whose logits nobody reads): the last layer stops after
 * its key/value projections, skipping its queries, attention, MLP and the LM head.
 */
export function buildLlamaPresents(
  g: Graph,
  config: LlamaConfig,
  params: Map<string, Value>,
  inp: LlamaInputs,
): LlamaOutputs['presents'] {
  return decoder(g, config, params, inp, undefined, true).presents;
}

function decoder(
  g: Graph,
  config: LlamaConfig,
  params: Map<string, Value>,
  inp: LlamaInputs,
  rows: Value | undefined,
  presentsOnly: boolean,
): { logits?: Value; presents: LlamaOutputs['presents'] } {
  const { H, Hkv, D, G, L } = dims(config);
  const B = inp.tokens.shape[0] as number;
  const w = (name: string) => {
    const v = params.get(name);
    if (!v) throw new Error(`missing parameter ${name}`);
    return v;
  };
  const eps = config.rms_norm_eps;
  const { qkvBias, qkNorm } = familyTraits(config);
  const linear = linearOf(g, config, w, params);
  /** A q/k/v projection as the family computes it: GEMM, then its bias (Qwen2), then RMSNorm per head (Qwen3). */
  const project = (attn: string, name: 'q_proj' | 'k_proj' | 'v_proj', from: Value): Value => {
    let y = linear(from, `${attn}.${name}`); // [N, heads·D]
    if (qkvBias) y = g.add(y, w(`${attn}.${name}.bias`));
    if (qkNorm && name !== 'v_proj') {
      const norm = w(`${attn}.${name === 'q_proj' ? 'q_norm' : 'k_norm'}.weight`);
      y = g.reshape(rmsNorm(g, g.reshape(y, [-1, D]), norm, eps), [-1, y.shape[1]!]);
    }
    return y;
  };
  const scale = g.scalar(1 / Math.sqrt(D));
  const cosQ = g.mul(inp.cos, scale); // [B, T, 1, D]: folding 1/sqrt(D) into q's rotation is free
  const sinQ = g.mul(inp.sin, scale);
  const R = rotateHalf(g, D);

  if (rows && inp.past) throw new Error('buildLlama: row selection is for cache-less scoring graphs');
  const rowIdx = rows ? g.unsqueeze(rows, [2]) : undefined; // [B, R, 1]
  const pickRows = (t: Value) => g.gatherND(t, rowIdx!, 1); // [B, T, ...] → [B, R, ...]
  const pickFlat = (t: Value) => g.reshape(pickRows(g.reshape(t, [B, -1, t.shape[1]!])), [-1, t.shape[1]!]); // [N, c] → [B·R, c]

  let x = g.gather(w('model.embed_tokens.weight'), g.reshape(inp.tokens, [-1])); // [N, C]
  const presents: LlamaOutputs['presents'] = [];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    const trim = rowIdx !== undefined && l === L - 1;
    const h = rmsNorm(g, x, w(`${p}.input_layernorm.weight`), eps); // [N, C]
    const proj = (name: 'q_proj' | 'k_proj' | 'v_proj', from = h) => project(`${p}.self_attn`, name, from); // [N, out]
    const k = rope(g, proj('k_proj'), inp.cos, inp.sin, R, B, Hkv, D); // [B, T, Hkv, D]
    const v = g.reshape(proj('v_proj'), [B, -1, Hkv, D]); // [B, T, Hkv, D]
    const keys = g.transpose(k, [0, 2, 1, 3]); // [B, Hkv, T, D]
    const values = g.transpose(v, [0, 2, 1, 3]); // [B, Hkv, T, D]
    presents.push({ keys, values });
    if (presentsOnly && l === L - 1) return { presents };
    if (inp.tree) {
      x = treeAttention(g, config, {
        inp,
        tree: inp.tree,
        x,
        h,
        keys,
        values,
        last: l === L - 1,
        cosQ,
        sinQ,
        R,
        projectQ: (from) => proj('q_proj', from),
        projectO: (from) => linear(from, `${p}.self_attn.o_proj`),
      });
      x = mlp(g, x, p, linear, w, eps);
      continue;
    }
    const q = trim
      ? rope(g, proj('q_proj', pickFlat(h)), pickRows(cosQ), pickRows(sinQ), R, B, H, D) // [B, R, H, D]
      : rope(g, proj('q_proj'), cosQ, sinQ, R, B, H, D); // [B, T, H, D]
    // Grouped heads use a 5-D [B, Hkv, G, T, D] layout so K/V broadcast over G without copies; plain
    // multi-head attention stays 4-D, where ORT's broadcast Add of the bias is markedly faster.
    const grouped = G > 1;
    const qa = grouped
      ? g.transpose(g.reshape(q, [B, q.shape[1]!, Hkv, G, D]), [0, 2, 3, 1, 4]) // [B, Hkv, G, T, D]
      : g.transpose(q, [0, 2, 1, 3]); // [B, H, T, D]
    const kv = (x: Value) => (grouped ? g.unsqueeze(x, [2]) : x); // broadcast over G
    const qk = (ks: Value) => g.matmul(qa, kv(g.transpose(ks, [0, 1, 3, 2]))); // [B, Hkv, (G,) T, ·] (ORT folds the transpose into FusedMatMul)
    const biasT = g.unsqueeze(trim ? pickRows(inp.bias) : inp.bias, grouped ? [1, 2] : [1]); // [B, 1, (1,) T, L]
    const past = inp.past?.[l];
    let ctx: Value; // [B, Hkv, (G,) T, D]
    if (past) {
      // Scores against the cache and against this call's keys are computed apart and only the small
      // score/probability tensors are concatenated and split: concatenating the cache itself would copy
      // all of it on every decode step (and hand it back as an output, a second copy).
      const probs = g.softmax(g.add(g.concat([qk(past.keys), qk(keys)], -1), biasT), -1); // [B, Hkv, (G,) T, P+T]
      const axis = probs.shape.length - 1;
      const shapes = [past.keys.shape[2]!, keys.shape[2]!].map((d) => ({
        dtype: probs.dtype,
        shape: probs.shape.map((x, a) => (a === axis ? d : x)),
      }));
      const [pPast, pNew] = g.emit(
        'Split',
        [probs, inp.pastSplit!],
        { axis: { type: 'int', value: axis } },
        shapes,
      ) as [Value, Value];
      ctx = g.add(g.matmul(pPast, kv(past.values)), g.matmul(pNew, kv(values)));
    } else {
      ctx = g.matmul(g.softmax(g.add(qk(keys), biasT), -1), kv(values));
    }
    const merged = g.reshape(g.transpose(ctx, grouped ? [0, 3, 1, 2, 4] : [0, 2, 1, 3]), [-1, H * D]); // [N, H·D]
    if (trim) x = pickFlat(x); // [B·R, C]
    x = g.add(x, linear(merged, `${p}.self_attn.o_proj`)); // [N, C]
    x = mlp(g, x, p, linear, w, eps);
  }
  const hf = rmsNorm(g, x, w('model.norm.weight'), eps); // [N, C] (or [B·R, C])
  const head = config.tie_word_embeddings ? w('model.embed_tokens.weight') : w('lm_head.weight');
  const logits = g.gemm(hf, head, { transB: true }); // [N, V]
  return { logits, presents };
}

/** A projection x·Wᵀ, plus (alpha/rank)·(x·Aᵀ)·Bᵀ when the module has a LoRA adapter (lora.ts). */
type Linear = (from: Value, module: string) => Value;

function linearOf(g: Graph, config: LlamaConfig, w: (name: string) => Value, params: Map<string, Value>): Linear {
  const scale = config.lora ? g.scalar(loraScale(config.lora)) : undefined;
  return (from, module) => {
    const y = g.gemm(from, w(`${module}.weight`), { transB: true });
    const A = scale && params.get(`${module}.lora_A.weight`);
    if (!A) return y;
    const down = g.gemm(from, A, { transB: true }); // [N, rank]
    return g.add(y, g.mul(g.gemm(down, w(`${module}.lora_B.weight`), { transB: true }), scale));
  };
}

/** The post-attention half of layer `p`: x + MLP(norm(x)). */
function mlp(g: Graph, x: Value, p: string, linear: Linear, w: (name: string) => Value, eps: number): Value {
  const h2 = rmsNorm(g, x, w(`${p}.post_attention_layernorm.weight`), eps); // [N, C]
  const gate = linear(h2, `${p}.mlp.gate_proj`); // [N, I]
  const up = linear(h2, `${p}.mlp.up_proj`); // [N, I]
  const act = g.mul(g.mul(gate, g.sigmoid(gate)), up); // [N, I] SwiGLU
  return g.add(x, linear(act, `${p}.mlp.down_proj`)); // [N, C]
}

/**
 * Attention (plus residual) of the block-sparse scoring layout: context queries against context keys,
 * continuation queries against all keys. In the last layer only the continuation rows go on, so x
 * shrinks to [B·S, C].
 */
/** What one layer's tree attention works on (see treeAttention). */
interface TreeLayer {
  inp: LlamaInputs;
  tree: NonNullable<LlamaInputs['tree']>;
  /** The residual stream [N, C] and its normed copy. */
  x: Value;
  h: Value;
  /** This layer's keys and values of every row. */
  keys: Value;
  values: Value;
  /** The last layer: only the copy rows go on (their log-probs are all that is read). */
  last: boolean;
  cosQ: Value;
  sinQ: Value;
  R: Value;
  /** The layer's query projection ([rows, C] → [rows, H·D]), with the family's bias and norm. */
  projectQ: (from: Value) => Value;
  /** The layer's output projection ([rows, H·D] → [rows, C]). */
  projectO: (from: Value) => Value;
}

function treeAttention(
  g: Graph,
  config: LlamaConfig,
  { inp, tree, x, h, keys, values, last, cosQ, sinQ, R, projectQ, projectO }: TreeLayer,
): Value {
  const { H, Hkv, D, G } = dims(config);
  const C = config.hidden_size;
  const B = inp.tokens.shape[0] as number;
  const grouped = G > 1;
  const split = (t: Value, axis: number): [Value, Value] => {
    const shapes = ['N', 'S'].map((d) => ({ dtype: t.dtype, shape: t.shape.map((x, a) => (a === axis ? d : x)) }));
    return g.emit('Split', [t, tree.split], { axis: { type: 'int', value: axis } }, shapes) as [Value, Value];
  };
  const kv = (t: Value) => (grouped ? g.unsqueeze(t, [2]) : t);
  const heads = (q: Value) =>
    grouped
      ? g.transpose(g.reshape(q, [B, q.shape[1]!, Hkv, G, D]), [0, 2, 3, 1, 4]) // [B, Hkv, G, t, D]
      : g.transpose(q, [0, 2, 1, 3]); // [B, H, t, D]
  const attend = (qa: Value, ks: Value, vs: Value, bias: Value) =>
    g.matmul(
      g.softmax(g.add(g.matmul(qa, kv(g.transpose(ks, [0, 1, 3, 2]))), g.unsqueeze(bias, grouped ? [1, 2] : [1])), -1),
      kv(vs),
    );
  const merge = (ctx: Value) => g.reshape(g.transpose(ctx, grouped ? [0, 3, 1, 2, 4] : [0, 2, 1, 3]), [-1, H * D]); // [rows, H·D]
  const gemmT = (a: Value, b: Value) => g.gemm(a, b, { transB: true });
  if (last) {
    const copyRows = (t: Value) => g.reshape(split(g.reshape(t, [B, -1, C]), 1)[1], [-1, C]); // [B·T, C] → [B·S, C]
    const q = rope(g, projectQ(copyRows(h)), split(cosQ, 1)[1], split(sinQ, 1)[1], R, B, H, D); // [B, S, H, D]
    const ctx = attend(heads(q), keys, values, tree.copyBias);
    return g.add(copyRows(x), projectO(merge(ctx))); // [B·S, C]
  }
  const q = rope(g, projectQ(h), cosQ, sinQ, R, B, H, D); // [B, T, H, D]
  const [qC, qS] = split(heads(q), grouped ? 3 : 2);
  const ctxC = attend(qC, split(keys, 2)[0], split(values, 2)[0], inp.bias); // [B, Hkv, (G,) N, D]
  const ctxS = attend(qS, keys, values, tree.copyBias); // [B, Hkv, (G,) S, D]
  const axis = grouped ? 3 : 2;
  const ctxShape = ctxS.shape.map((d, a) => (a === axis ? keys.shape[2]! : d)); // N + S = T again (Graph.concat would name it N+S)
  const ctx = g.emit('Concat', [ctxC, ctxS], { axis: { type: 'int', value: axis } }, [
    { dtype: ctxS.dtype, shape: ctxShape },
  ])[0]!;
  return g.add(x, projectO(merge(ctx))); // [B·T, C]
}

/** log p(targets) per position: [N, V] logits with [B, T] targets → [B, T]; [R, V] with [R] → [R]. */
export function targetLogps(g: Graph, logits: Value, targets: Value): Value {
  const logp = g.logSoftmax(logits, -1); // [N, V]
  const picked = g.gatherElements(logp, g.reshape(targets, [-1, 1]), 1); // [N, 1]
  return targets.shape.length === 2 ? g.reshape(picked, [targets.shape[0] as number, -1]) : g.reshape(picked, [-1]);
}

/**
 * Rotary tables for explicit position ids: cos and sin, each [B, T, 1, D] (float64 math, HF layout), for
 * the config's RoPE kind (rope.ts); YaRN's attention factor is folded into both.
 */
export function rotaryTables(config: LlamaConfig, positions: number[][], T: number, floatType: FloatType = 'float32') {
  const { D } = dims(config);
  const B = positions.length;
  const Arr = floatType === 'float64' ? Float64Array : Float32Array;
  const cos = new Arr(B * T * D);
  const sin = new Arr(B * T * D);
  const half = D / 2;
  let seqLen = 1; // the longest sequence of the call: max position + 1
  for (const row of positions) for (let t = 0; t < T; t++) seqLen = Math.max(seqLen, (row[t] ?? 0) + 1);
  if (config.sliding_window !== undefined && seqLen > config.sliding_window)
    throw new Error(
      `sliding_window ${config.sliding_window} is shorter than this call's ${seqLen} positions: sliding-window attention is not implemented (keep prompt + generation within ${config.sliding_window} tokens)`,
    );
  const { invFreq, attentionFactor } = ropeFrequencies(config, D, seqLen);
  for (let b = 0; b < B; b++) {
    const row = positions[b]!;
    for (let t = 0; t < T; t++) {
      const pos = row[t] ?? 0;
      const o = (b * T + t) * D;
      for (let j = 0; j < half; j++) {
        const a = pos * invFreq[j]!;
        const c = Math.cos(a) * attentionFactor;
        const s = Math.sin(a) * attentionFactor;
        cos[o + j] = c;
        cos[o + j + half] = c;
        sin[o + j] = s;
        sin[o + j + half] = s;
      }
    }
  }
  return { cos, sin, dims: [B, T, 1, D] };
}
