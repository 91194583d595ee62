/**
 * Rotary position embeddings as transformers computes them (`modeling_rope_utils.py`): the inverse
 * frequencies of each `rope_type` and the attention factor that scales cos and sin (YaRN). Tables are
 * computed here in float64 and fed to the graphs, so every family and scaling type shares one graph.
 */
import { z } from 'zod';

const factor = z.number().positive();
const contextLength = z.number().int().positive();

/** `rope_scaling` / `rope_parameters` beyond plain RoPE, by `rope_type`; anything else is refused. */
export const ropeScalingSchema = z.discriminatedUnion('rope_type', [
  z.object({ rope_type: z.literal('linear'), factor }).strict(),
  z.object({ rope_type: z.literal('dynamic'), factor }).strict(),
  z
    .object({
      rope_type: z.literal('llama3'),
      factor,
      low_freq_factor: z.number().positive(),
      high_freq_factor: z.number().positive(),
      original_max_position_embeddings: contextLength,
    })
    .strict(),
  z
    .object({
      rope_type: z.literal('yarn'),
      factor,
      original_max_position_embeddings: contextLength.optional(),
      attention_factor: z.number().positive().optional(),
      beta_fast: z.number().positive().optional(),
      beta_slow: z.number().positive().optional(),
      mscale: z.number().optional(),
      mscale_all_dim: z.number().optional(),
      truncate: z.boolean().optional(),
    })
    .strict(),
]);
export type RopeScaling = z.infer<typeof ropeScalingSchema>;
export const ROPE_TYPES = ['default', ...ropeScalingSchema.options.map((o) => o.shape.rope_type.value)];

export interface RopeConfig {
  rope_theta: number;
  rope_scaling?: RopeScaling | undefined;
  max_position_embeddings: number;
}

/**
 * Inverse frequencies (D/2 of them) and the factor cos and sin are multiplied by. `seqLen` is the
 * longest sequence of the call (max position + 1): only `dynamic` depends on it, recomputing its base
 * once a sequence outgrows `max_position_embeddings`, per call (transformers also keeps the largest
 * base it has seen while a model object lives; per call is what a single forward computes).
 */
export function ropeFrequencies(
  c: RopeConfig,
  D: number,
  seqLen: number,
): { invFreq: number[]; attentionFactor: number } {
  const plain = (base: number) => Array.from({ length: D / 2 }, (_, j) => 1 / Math.pow(base, (2 * j) / D));
  const s = c.rope_scaling;
  if (!s) return { invFreq: plain(c.rope_theta), attentionFactor: 1 };
  switch (s.rope_type) {
    case 'linear':
      return { invFreq: plain(c.rope_theta).map((f) => f / s.factor), attentionFactor: 1 };
    case 'dynamic': {
      const max = c.max_position_embeddings;
      const len = seqLen > max ? seqLen : max;
      const base = c.rope_theta * Math.pow((s.factor * len) / max - (s.factor - 1), D / (D - 2));
      return { invFreq: plain(base), attentionFactor: 1 };
    }
    case 'llama3': {
      const old = s.original_max_position_embeddings;
      const lowWavelen = old / s.low_freq_factor;
      const highWavelen = old / s.high_freq_factor;
      const invFreq = plain(c.rope_theta).map((f) => {
        const wavelen = (2 * Math.PI) / f;
        if (wavelen < highWavelen) return f; // high frequencies: unchanged
        if (wavelen > lowWavelen) return f / s.factor; // low frequencies: interpolated
        const smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        return (1 - smooth) * (f / s.factor) + smooth * f;
      });
      return { invFreq, attentionFactor: 1 };
    }
    case 'yarn':
      return yarn(c, s, D);
  }
}

function yarn(c: RopeConfig, s: Extract<RopeScaling, { rope_type: 'yarn' }>, D: number) {
  const base = c.rope_theta;
  const originalMax = s.original_max_position_embeddings ?? c.max_position_embeddings;
  const mscale = (scale: number, m = 1) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
  const attentionFactor =
    s.attention_factor ??
    (s.mscale && s.mscale_all_dim ? mscale(s.factor, s.mscale) / mscale(s.factor, s.mscale_all_dim) : mscale(s.factor));
  const correctionDim = (rotations: number) =>
    (D * Math.log(originalMax / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  const truncate = s.truncate ?? true;
  let low = correctionDim(s.beta_fast ?? 32);
  let high = correctionDim(s.beta_slow ?? 1);
  if (truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, D - 1);
  if (low === high) high += 0.001; // no division by zero in the ramp
  const invFreq = Array.from({ length: D / 2 }, (_, j) => {
    const posFreq = Math.pow(base, (2 * j) / D);
    const extrapolation = 1 / posFreq;
    const interpolation = 1 / (s.factor * posFreq);
    const ramp = Math.min(Math.max((j - low) / (high - low), 0), 1);
    const keep = 1 - ramp; // share of the extrapolated (unscaled) frequency
    return interpolation * (1 - keep) + extrapolation * keep;
  });
  return { invFreq, attentionFactor };
}
