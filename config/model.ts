/**
 * The model a run trains: the architecture of `model.checkpoint` when it starts from one, else its preset
 * with the overrides in `model.config`; the vocabulary must cover the tokenizer.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parseHfConfig } from '../engine/checkpoint';
import { llamaConfigSchema, modelPresets, type LlamaConfig } from '../engine/config';
import { jsonFileProblem } from '../util/json';
import type { Tokenizer } from '../engine/tokenizer';
import type { RunConfig } from './schema';

/**
 * Preset + overrides (every override is an engine field: config/schema.ts refuses anything else), with
 * `vocab_size` raised to the tokenizer's unless the config sets it.
 */
export function modelConfigFor(config: RunConfig, tokenizer: Tokenizer, baseDir = process.cwd()): LlamaConfig {
  const model = architecture(config, tokenizer, baseDir);
  return config.model.lora ? { ...model, lora: config.model.lora } : model;
}

function architecture(config: RunConfig, tokenizer: Tokenizer, baseDir: string): LlamaConfig {
  if (config.model.checkpoint) return checkpointConfig(config.model.checkpoint, tokenizer, baseDir);
  const overrides = config.model.config ?? {};
  const base = { ...modelPresets[config.model.preset], ...overrides };
  if (overrides.vocab_size === undefined) base.vocab_size = Math.max(tokenizer.vocabSize, base.vocab_size);
  const parsed = llamaConfigSchema.safeParse(base);
  if (!parsed.success)
    throw new Error(`model.config: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** The architecture in a checkpoint's config.json, read as loadCheckpoint reads it. */
function checkpointConfig(dir: string, tokenizer: Tokenizer, baseDir: string): LlamaConfig {
  const file = join(isAbsolute(dir) ? dir : resolve(baseDir, dir), 'config.json');
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`model.checkpoint: ${file} ${jsonFileProblem(err)}`);
  }
  const model = parseHfConfig(raw, file);
  if (model.vocab_size < tokenizer.vocabSize)
    throw new Error(
      `model.checkpoint: ${file}: vocab_size ${model.vocab_size} is smaller than the tokenizer's ${tokenizer.vocabSize} tokens (model.tokenizer must be the checkpoint's own)`,
    );
  return model;
}
