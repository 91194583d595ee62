/** The model a run trains: its preset, the overrides in `model.config`, and a vocabulary that covers the tokenizer. */
import { llamaConfigSchema, modelPresets, type LlamaConfig } from '../engine/config';
import type { Tokenizer } from '../engine/tokenizer';
import type { RunConfig } from './schema';

/**
 * Preset + overrides (every override is an engine field: config/schema.ts refuses anything else), with
 * `vocab_size` raised to the tokenizer's unless the config sets it.
 */
export function modelConfigFor(config: RunConfig, tokenizer: Tokenizer): LlamaConfig {
  const overrides = config.model.config ?? {};
  const base = { ...modelPresets[config.model.preset], ...overrides };
  if (overrides.vocab_size === undefined) base.vocab_size = Math.max(tokenizer.vocabSize, base.vocab_size);
  const parsed = llamaConfigSchema.safeParse(base);
  if (!parsed.success)
    throw new Error(`model.config: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}
