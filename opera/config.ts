/**
 * The run config (YAML): one zod schema is the source of the type, the defaults and the ranges.
 *
 * Every object is `.strict()`, so a misspelt key is an error rather than a silently ignored setting
 * (a typo in `klCoef` would otherwise train with the default and nobody would notice). Nested
 * objects use `.prefault({})`: an omitted section is parsed from `{}`, which fills in its defaults.
 * Errors name the file, the 1-based line (from the YAML source) and the key path, e.g.
 * `configs/x.yaml:7: grpo.groupSize: Too small: expected number to be >=1`.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node } from 'yaml';
import { z } from 'zod';
import { canonicalJson, sha256Hex } from './canonical';
import { DEFAULT_COLD_START_OPTIONS as CS } from './coldstart';
import { DEFAULT_OPERA_REWARD_OPTIONS as RW } from './reward';

const int = (min: number) => z.number().int().min(min);
const positive = z.number().positive();
const unit = z.number().min(0).max(1);

/** Hugging Face `LlamaConfig` field names, all optional: overrides applied on top of the preset. */
const llamaOverrides = z
  .object({
    vocab_size: int(1),
    hidden_size: int(1),
    intermediate_size: int(1),
    num_hidden_layers: int(1),
    num_attention_heads: int(1),
    num_key_value_heads: int(1),
    head_dim: int(1),
    max_position_embeddings: int(1),
    rms_norm_eps: positive,
    rope_theta: positive,
    hidden_act: z.literal('silu'),
    tie_word_embeddings: z.boolean(),
    attention_bias: z.boolean(),
    mlp_bias: z.boolean(),
    initializer_range: positive,
    bos_token_id: int(0),
    eos_token_id: int(0),
    pad_token_id: int(0),
  })
  .partial()
  .strict();

const model = z
  .object({
    preset: z.enum(['tiny', 'demo', 'bench']).default('demo'),
    config: llamaOverrides.optional(),
    /** Directory with `config.json` + `model.safetensors` (HF layout); absent → fresh initialisation. */
    checkpoint: z.string().min(1).optional(),
    /** `'byte'`: the built-in byte-level tokenizer; anything else is a path to a HF `tokenizer.json`. */
    tokenizer: z.string().min(1).default('byte'),
  })
  .strict();

const data = z
  .object({
    /** `synthetic` or a path to a `.jsonl` / `.parquet` file. */
    source: z
      .string()
      .refine((s) => s === 'synthetic' || /\.(jsonl|parquet)$/i.test(s), {
        message: "must be 'synthetic' or a path ending in .jsonl or .parquet",
      })
      .default('synthetic'),
    synthetic: z
      .object({ writing: int(0).default(48), math: int(0).default(48), seed: int(0).default(0) })
      .strict()
      .prefault({}),
    evalFraction: z.number().gt(0).lt(1).default(0.2),
    maxPromptTokens: int(1).default(256),
  })
  .strict();

/**
 * Teacher sampling for cold-start synthesis; defaults come from coldstart.ts (OPERA.md: temperature
 * 0.6, top-p 0.95, top-k 20, k = 4 candidates, 20 reflections).
 */
const teacher = z
  .object({
    /** HF-style checkpoint directory of the teacher; absent → the run's initial model. */
    checkpoint: z.string().min(1).optional(),
    temperature: z.number().min(0).default(CS.temperature),
    topP: z.number().gt(0).max(1).default(CS.topP),
    topK: int(0).default(CS.topK),
    candidates: int(1).default(CS.candidates),
    maxReflections: int(0).default(CS.maxReflections),
    /** Token budget of one generation call (a step, a candidate, the closing step, the answer). */
    maxStepTokens: int(1).default(CS.maxStepTokens),
    guidingWords: z.array(z.string().min(1)).min(1).default([...CS.guidingWords]),
  })
  .strict();

const coldStart = z
  .object({
    enabled: z.boolean().default(true),
    /** false: SFT on the dataset's own traces (synthetic rows carry them); true: teacher synthesis. */
    synthesize: z.boolean().default(false),
    teacher: teacher.prefault({}),
    steps: int(0).default(60),
    batchSize: int(1).default(8),
    lr: positive.default(3e-3),
    warmupSteps: int(0).default(5),
    weightDecay: z.number().min(0).default(0),
  })
  .strict();

const grpo = z
  .object({
    iterations: int(0).default(4),
    promptsPerIteration: int(1).default(8),
    groupSize: int(1).default(4),
    /** Counted in sequences (rollouts) per optimizer step. */
    miniBatchSize: int(1).default(8),
    epochs: int(1).default(1),
    lr: positive.default(1e-4),
    warmupSteps: int(0).default(0),
    klCoef: z.number().min(0).default(0.001),
    clip: z.number().gt(0).lt(1).default(0.2),
    /** Asymmetric clip bounds (DAPO-style); each defaults to `clip` when absent. */
    clipLow: z.number().min(0).lt(1).optional(),
    clipHigh: positive.optional(),
    /** verl requires the dual-clip constant to exceed 1 (it bounds the loss of A<0 tokens). */
    dualClip: z.number().gt(1).default(3),
    aggregation: z.enum(['token-mean', 'seq-mean-token-mean']).default('token-mean'),
    temperature: positive.default(1.0),
    topP: z.number().gt(0).max(1).default(1.0),
    topK: int(0).default(0),
    maxNewTokens: int(1).default(64),
  })
  .strict();

/** Defaults come from reward.ts, the implementation they configure. */
const reward = z
  .object({
    pplWeight: z.number().min(0).default(RW.pplWeight),
    reflectionWeight: z.number().min(0).default(RW.reflectionWeight),
    emaAlpha: z.number().gt(0).max(1).default(RW.emaAlpha),
    emaMix: unit.default(RW.emaMix),
    keywords: z.array(z.string().min(1)).min(1).default([...RW.keywords]),
    keywordMatch: z.enum(['word', 'substring']).default(RW.keywordMatch),
  })
  .strict();

const evalSection = z
  .object({
    /** Evaluate every this many iterations (0: only before training and at the end). */
    every: int(0).default(2),
    prompts: int(1).default(16),
    maxNewTokens: int(1).default(64),
    /** 0 = greedy. */
    temperature: z.number().min(0).default(0),
  })
  .strict();

const runtime = z
  .object({
    rolloutShards: int(1).default(2),
    continueAsNewEvery: int(1).default(10),
    artifactsDir: z.string().min(1).default('.operaflow/artifacts'),
    providers: z.array(z.string().min(1)).min(1).default(['cpu']),
    maxStageAttempts: int(1).default(3),
  })
  .strict();

export const runConfigSchema = z
  .object({
    name: z.string().min(1),
    seed: z.number().int().min(0).max(0xffffffff).default(0),
    model: model.prefault({}),
    data: data.prefault({}),
    coldStart: coldStart.prefault({}),
    grpo: grpo.prefault({}),
    reward: reward.prefault({}),
    eval: evalSection.prefault({}),
    runtime: runtime.prefault({}),
  })
  .strict();

export type RunConfig = z.infer<typeof runConfigSchema>;
/** The config as written in YAML (every defaulted key optional). */
export type RunConfigInput = z.input<typeof runConfigSchema>;

type PathKey = string | number;

/**
 * Walk the YAML AST along a key path. Returns the deepest node reached, the key node of the last
 * map entry walked, and whether the whole path exists (a missing key stops at its parent).
 */
function locate(doc: Document, path: readonly PathKey[]): { node: Node | null; keyNode: Node | null; found: boolean } {
  let node: unknown = doc.contents;
  let keyNode: Node | null = null;
  for (const key of path) {
    if (isAlias(node)) node = node.resolve(doc); // `grpo: *base`: the keys live in the anchored node
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(key));
      if (!pair) return { node: node as Node, keyNode, found: false };
      keyNode = pair.key as Node;
      node = pair.value;
    } else if (isSeq(node) && typeof key === 'number' && /* Stryker disable ConditionalExpression: equivalent, zod reports only indexes the parsed list has, and it has the sequence's items */ node.items[key] !== undefined) {
      // Stryker restore ConditionalExpression
      keyNode = null;
      node = node.items[key];
    } else return { node: /* Stryker disable LogicalOperator: equivalent, the walk ends here only at an empty document (null either way); zod never reports a path below a scalar */ (node as Node | null) ?? null, /* Stryker restore LogicalOperator */ keyNode, found: false };
  }
  return { node: (node as Node | null) ?? null, keyNode, found: true };
}

function lineOf(lc: LineCounter, node: Node | null | undefined): number | null {
  const start = node?.range?.[0];
  return start === undefined ? null : lc.linePos(start).line;
}

/** Parse and validate a YAML run config. `file` is used only in error messages. */
export function parseRunConfig(text: string, file: string): RunConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = yamlError.linePos?.[0].line ?? lc.linePos(yamlError.pos[0]).line;
    throw new Error(`${file}:${line}: invalid YAML: ${yamlError.message.split('\n')[0]}`);
  }
  const raw: unknown = doc.toJS() ?? {};
  const result = runConfigSchema.safeParse(raw);
  if (result.success) return result.data;

  const lines = result.error.issues.map((issue) => {
    // Stryker disable next-line ConditionalExpression: equivalent, this schema's paths hold only string keys and indexes (the filter narrows the type)
    const path = issue.path.filter((k): k is PathKey => typeof k !== 'symbol');
    // zod reports unknown keys on the parent object: name each key itself, at its own line.
    if (issue.code === 'unrecognized_keys') {
      return issue.keys
        .map((key) => {
          const { keyNode } = locate(doc, [...path, key]);
          const line = lineOf(lc, keyNode);
          return `${file}${line ? `:${line}` : ''}: ${[...path, key].join('.')}: unknown key`;
        })
        .join('\n');
    }
    const { node, keyNode, found } = locate(doc, path);
    // A missing key has no node of its own: `locate` stops at its parent, which we point at.
    // An empty value (`groupSize:`) parses to a null node: point at its key instead.
    const line = lineOf(lc, node ?? keyNode);
    // A path that is not in the YAML is a required key that was left out, which zod reports as
    // invalid_type (defaults fill every other absent key, and aliases are followed), so testing the code
    // is defensive: making it always true is an equivalent mutant. (The directive also covers the other
    // ConditionalExpression mutants of this `&&`, which start at the same place.)
    const missing = /* Stryker disable ConditionalExpression: equivalent, see above */ issue.code === 'invalid_type' && /* Stryker restore ConditionalExpression */ !found;
    const message = missing ? 'required key is missing' : issue.message;
    return `${file}${line ? `:${line}` : ''}: ${path.length ? path.join('.') : '(root)'}: ${message}`;
  });
  throw new Error(lines.join('\n'));
}

export function loadRunConfig(path: string): RunConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read run config: ${(err as Error).message}`);
  }
  return parseRunConfig(text, path);
}

/** sha256 of the canonical JSON (sorted keys) of the parsed config, defaults included. */
export function configHash(config: RunConfig): string {
  return sha256Hex(canonicalJson(config));
}
