// Shared test fixtures: deterministic random weights large enough that logits differ meaningfully.
import { type LlamaConfig, llamaConfigSchema, modelPresets } from '../../engine/config';
import { LlamaModel, causalBias, parameterShapes, type Weights } from '../../engine/model';
import type { Tokenizer } from '../../engine/tokenizer';

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    s ^= s + Math.imul(s ^ (s >>> 7), 61 | s);
    return ((s ^ (s >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomWeights(config: LlamaConfig, seed: number, scale = 0.25): Weights {
  const r = rng(seed);
  const w: Weights = new Map();
  for (const [name, shape] of parameterShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = shape.length === 1;
    w.set(
      name,
      Float32Array.from({ length: n }, () => (isNorm ? 0.8 + 0.4 * r() : (2 * r() - 1) * scale)),
    );
  }
  return w;
}

export const tinyGqa: LlamaConfig = modelPresets.tiny;
export const tinyTied: LlamaConfig = llamaConfigSchema.parse({
  ...modelPresets.tiny,
  hidden_size: 24,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  tie_word_embeddings: true,
  vocab_size: 40,
});

export function byteLevelAlphabet(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const chars: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) chars[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  return chars;
}

/** A small byte-level BPE tokenizer.json (a few merges; `<|endoftext|>`, `<think>`, `</think>` added), as HF writes them. */
export function tinyBpeTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteLevelAlphabet().forEach((c, i) => {
    vocab[c] = i;
  });
  const merges = [
    ['h', 'e'],
    ['l', 'l'],
    ['he', 'll'],
    ['hell', 'o'],
    ['Ġ', 'w'],
  ];
  for (const [a, b] of merges) vocab[`${a}${b}`] = Object.keys(vocab).length;
  const added = ['<|endoftext|>', '<think>', '</think>'].map((content, i) => ({
    id: 256 + merges.length + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: content === '<|endoftext|>',
  }));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: merges.map((m) => m.join(' ')),
    },
  };
  return tokenizerJson;
}

export { maxAbsDiff } from '../../util/stats';

/** Logits [B·T·V] of full-length rows (positions 0..T-1, causal mask). */
export async function logitsOf(model: LlamaModel, rows: number[][]): Promise<Float32Array> {
  const T = rows[0]!.length;
  const attnBias = causalBias(
    rows.map(() => T),
    T,
  );
  return (await model.forward({ tokens: rows, positions: rows.map((r) => r.map((_, k) => k)), attnBias })).logits;
}

/** A tokenizer over bare ids with no EOS in the vocabulary: sampling always runs to maxNewTokens. */
export function idTokenizer(vocabSize: number): Tokenizer {
  return { vocabSize, bosId: 1, eosId: -1, padId: 0, specialIds: {}, encode: () => [], decode: (t) => t.join(' ') };
}
