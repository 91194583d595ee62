// An independent float64 Llama forward in plain loops (llm.c style): no graph builder, no ORT, HF
// semantics written out directly (rotate_half RoPE, repeat_kv for grouped heads, additive bias).
import type { LlamaConfig } from '../../engine/config';

type W = Map<string, Float32Array>;

function linear(x: Float64Array[], w: Float32Array, out: number, inn: number): Float64Array[] {
  return x.map((row) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let k = 0; k < inn; k++) s += row[k]! * w[o * inn + k]!;
      y[o] = s;
    }
    return y;
  });
}

function rmsnorm(x: Float64Array[], w: Float32Array, eps: number): Float64Array[] {
  return x.map((row) => {
    let ms = 0;
    for (const v of row) ms += v * v;
    const r = 1 / Math.sqrt(ms / row.length + eps);
    return row.map((v, k) => v * r * w[k]!);
  });
}

/** Logits [S][V] for one sequence; bias[q][k] is the additive mask (defaults to causal). */
export function referenceForward(
  config: LlamaConfig,
  weights: W,
  tokens: number[],
  positions?: number[],
  bias?: number[][],
): Float64Array[] {
  const C = config.hidden_size;
  const H = config.num_attention_heads;
  const Hkv = config.num_key_value_heads ?? H;
  const D = C / H;
  const I = config.intermediate_size;
  const V = config.vocab_size;
  const S = tokens.length;
  const pos = positions ?? tokens.map((_, k) => k);
  const mask = bias ?? tokens.map((_, q) => tokens.map((_, k) => (k <= q ? 0 : -Infinity)));
  const get = (n: string) => {
    const w = weights.get(n);
    if (!w) throw new Error(`reference: missing ${n}`);
    return w;
  };
  const emb = get('model.embed_tokens.weight');
  let x = tokens.map((t) => Float64Array.from(emb.subarray(t * C, (t + 1) * C)));
  const rope = (vec: Float64Array, p: number) => {
    const out = new Float64Array(D);
    for (let j = 0; j < D; j++) {
      const jj = j % (D / 2);
      const theta = p / Math.pow(config.rope_theta, (2 * jj) / D);
      const rot = j < D / 2 ? -vec[j + D / 2]! : vec[j - D / 2]!;
      out[j] = vec[j]! * Math.cos(theta) + rot * Math.sin(theta);
    }
    return out;
  };
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const h = rmsnorm(x, get(`${p}.input_layernorm.weight`), config.rms_norm_eps);
    const q = linear(h, get(`${p}.self_attn.q_proj.weight`), H * D, C);
    const k = linear(h, get(`${p}.self_attn.k_proj.weight`), Hkv * D, C);
    const v = linear(h, get(`${p}.self_attn.v_proj.weight`), Hkv * D, C);
    const attn = tokens.map(() => new Float64Array(H * D));
    for (let head = 0; head < H; head++) {
      const kvh = Math.floor(head / (H / Hkv));
      const qs = q.map((row, t) => rope(row.subarray(head * D, (head + 1) * D), pos[t]!));
      const ks = k.map((row, t) => rope(row.subarray(kvh * D, (kvh + 1) * D), pos[t]!));
      for (let t = 0; t < S; t++) {
        const scores = new Float64Array(S);
        let mx = -Infinity;
        for (let s = 0; s < S; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qs[t]![d]! * ks[s]![d]!;
          scores[s] = dot / Math.sqrt(D) + mask[t]![s]!;
          mx = Math.max(mx, scores[s]!);
        }
        let z = 0;
        for (let s = 0; s < S; s++) z += scores[s] = Math.exp(scores[s]! - mx);
        for (let s = 0; s < S; s++)
          for (let d = 0; d < D; d++) attn[t]![head * D + d]! += (scores[s]! / z) * v[s]![kvh * D + d]!;
      }
    }
    const o = linear(attn, get(`${p}.self_attn.o_proj.weight`), C, H * D);
    x = x.map((row, t) => row.map((val, c) => val + o[t]![c]!));
    const h2 = rmsnorm(x, get(`${p}.post_attention_layernorm.weight`), config.rms_norm_eps);
    const gate = linear(h2, get(`${p}.mlp.gate_proj.weight`), I, C);
    const up = linear(h2, get(`${p}.mlp.up_proj.weight`), I, C);
    const act = gate.map((row, t) => row.map((gv, c) => (gv / (1 + Math.exp(-gv))) * up[t]![c]!));
    const down = linear(act, get(`${p}.mlp.down_proj.weight`), C, I);
    x = x.map((row, t) => row.map((val, c) => val + down[t]![c]!));
  }
  const hf = rmsnorm(x, get('model.norm.weight'), config.rms_norm_eps);
  return linear(hf, config.tie_word_embeddings ? emb : get('lm_head.weight'), V, C);
}

export function logSoftmax(row: Float64Array): Float64Array {
  const mx = Math.max(...row);
  const z = Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0)) + mx;
  return row.map((v) => v - z);
}
