// One typed model config (Hugging Face LlamaConfig field names, so config.json round-trips with other
// tools) with defaults and named presets.
import { z } from 'zod';
import { loraSchema } from './lora';
import { ropeScalingSchema } from './rope';

/**
 * The Llama fields the engine implements, by their HF names, without defaults: the run config reuses
 * them as optional overrides of a preset (config/schema.ts), so a field exists in one place.
 */
export const llamaConfigFields = {
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive(),
  rms_norm_eps: z.number().positive(),
  rope_theta: z.number().positive(),
  vocab_size: z.number().int().positive(),
  tie_word_embeddings: z.boolean(),
  max_position_embeddings: z.number().int().positive(),
};

/**
 * The model families the engine computes, by config.json `model_type`: Llama; Mistral (Llama's layers;
 * its sliding window is refused once a sequence outgrows it, see rope.ts); Qwen2 (biases on the q/k/v
 * projections); Qwen3 (per-head RMSNorm of queries and keys, usually an explicit head_dim).
 */
export const MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3'] as const;
export type ModelType = (typeof MODEL_TYPES)[number];

export const llamaConfigSchema = z
  .object({
    model_type: z.enum(MODEL_TYPES).optional(),
    ...llamaConfigFields,
    num_key_value_heads: llamaConfigFields.num_key_value_heads.optional(),
    rms_norm_eps: llamaConfigFields.rms_norm_eps.default(1e-5),
    rope_theta: llamaConfigFields.rope_theta.default(10000),
    tie_word_embeddings: llamaConfigFields.tie_word_embeddings.default(false),
    max_position_embeddings: llamaConfigFields.max_position_embeddings.default(2048),
    /** The attention head size when it is not hidden_size / num_attention_heads (transformers' `head_dim`). */
    head_dim: z.number().int().positive().optional(),
    /** RoPE beyond the plain kind (config.json `rope_scaling`, or `rope_parameters` since transformers 5). */
    rope_scaling: ropeScalingSchema.optional(),
    /** Mistral: attention looks back at most this many positions (null or absent: no window). */
    sliding_window: z.number().int().positive().optional(),
    /** LoRA adapters on the projections (engine-side, never written to config.json: PEFT keeps its own file). */
    lora: loraSchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const kv = c.num_key_value_heads ?? c.num_attention_heads;
    if (c.head_dim === undefined && c.hidden_size % c.num_attention_heads !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['hidden_size'],
        message: 'hidden_size must be divisible by num_attention_heads (or head_dim given)',
      });
    if (c.num_attention_heads % kv !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['num_key_value_heads'],
        message: 'num_attention_heads must be divisible by num_key_value_heads',
      });
    if ((c.head_dim ?? c.hidden_size / c.num_attention_heads) % 2 !== 0)
      ctx.addIssue({
        code: 'custom',
        path: [c.head_dim === undefined ? 'hidden_size' : 'head_dim'],
        message: 'head dimension must be even for rotary embeddings',
      });
  });

export type LlamaConfig = z.infer<typeof llamaConfigSchema>;

/** What a family adds to Llama's layers: biases on q/k/v (Qwen2), RMSNorm of q and k per head (Qwen3). */
export function familyTraits(c: LlamaConfig): { qkvBias: boolean; qkNorm: boolean } {
  return { qkvBias: c.model_type === 'qwen2', qkNorm: c.model_type === 'qwen3' };
}

/** Derived sizes used throughout the graph builders. */
export function dims(c: LlamaConfig) {
  const H = c.num_attention_heads;
  const Hkv = c.num_key_value_heads ?? H;
  const D = c.head_dim ?? c.hidden_size / H;
  return { C: c.hidden_size, I: c.intermediate_size, L: c.num_hidden_layers, H, Hkv, D, G: H / Hkv, V: c.vocab_size };
}

const preset = (c: z.input<typeof llamaConfigSchema>): LlamaConfig =>
  llamaConfigSchema.parse({ model_type: 'llama', ...c });

export type ModelPreset = keyof typeof modelPresets;

export const modelPresets = {
  /** Test-sized: GQA (4 heads over 2 kv heads), byte-tokenizer vocabulary. */
  tiny: preset({
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 264,
    max_position_embeddings: 256,
    tie_word_embeddings: false,
  }),
  /** Trains usefully in a minute or two on two cores. */
  demo: preset({
    hidden_size: 128,
    intermediate_size: 344,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    vocab_size: 264,
    max_position_embeddings: 512,
    tie_word_embeddings: true,
  }),
  /** The `npm run bench` train-step shape. */
  bench: preset({
    hidden_size: 512,
    intermediate_size: 1376,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    num_key_value_heads: 8,
    vocab_size: 512,
    max_position_embeddings: 1024,
    tie_word_embeddings: false,
  }),
} satisfies Record<string, LlamaConfig>;
