// Shared test fixtures: deterministic random weights large enough that logits differ meaningfully.
import { type LlamaConfig, llamaConfigSchema, modelPresets } from '../../engine/config';
import { parameterShapes, type Weights } from '../../engine/model';

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
