/**
 * The run config: one zod schema is the source of its type, its defaults and its ranges.
 *
 * Every object is `.strict()`, so a misspelt key is an error rather than a silently ignored setting
 * (a typo in `klCoef` would otherwise train with the default and nobody would notice). Nested objects
 * use `.prefault({})`: an omitted section is parsed from `{}`, which fills in its defaults. Facts are
 * imported from the code they configure, never restated: the model fields and presets from
 * engine/config.ts, the reward, loss and cold-start defaults from opera/.
 */
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { CHAT_TEMPLATE_MODES } from '../engine/chat-template';
import { llamaConfigFields, llamaConfigSchema, modelPresets } from '../engine/config';
import { loraSchema } from '../engine/lora';
import { DEFAULT_COLD_START_OPTIONS as CS } from '../opera/coldstart';
import { POLICY_LOSS_DEFAULTS as LOSS, type LossAggregation } from '../opera/grpo';
import { DEFAULT_OPERA_REWARD_OPTIONS as RW } from '../opera/reward';
import { DEFAULT_REWARD_KIND, REWARD_KINDS } from '../opera/reward-kinds';
import { SYNTHETIC_LIMITS } from '../opera/synthetic';
import { parseS3Uri } from '../util/s3-uri';

/**
 * Every count has an upper bound too: a run config is small, and a value far past what any run uses
 * (`iterations: 1e9`, `groupSize: 200000`) is a mistake to report, not a run to start.
 */
const int = (min: number, max: number) => z.number().int().min(min).max(max);
const positive = z.number().positive().finite();
const unit = z.number().min(0).max(1);
/** Paths and names: non-empty and of a sane length. */
const text = (max: number) => z.string().min(1).max(max);
const path = text(4096);
/** Lists of words (guiding words, keywords). */
const words = (fallback: readonly string[]) =>
  z
    .array(text(100))
    .min(1)
    .max(100)
    .default([...fallback]);

/** Overrides of the preset: exactly the fields the engine implements (HF `LlamaConfig` names). */
const llamaOverrides = z.object(llamaConfigFields).partial().strict();

const model = z
  .object({
    preset: z
      .enum(Object.keys(modelPresets) as [keyof typeof modelPresets, ...(keyof typeof modelPresets)[]])
      .default('demo'),
    config: llamaOverrides.optional(),
    /**
     * An HF checkpoint directory (`config.json` + `model.safetensors` or shards) to start from: its
     * config.json decides the architecture (`preset` and `config` are then not used); absent → fresh init.
     */
    checkpoint: path.optional(),
    /** `'byte'`: the built-in byte-level tokenizer; anything else is a path to a HF `tokenizer.json`. */
    tokenizer: path.default('byte'),
    /**
     * Train LoRA adapters instead of all weights (SFT and GRPO): `{rank, alpha, dropout: 0, targetModules}`
     * (default targets: every attention and MLP projection). The base weights stay frozen.
     */
    lora: loraSchema.optional(),
  })
  .strict();

const data = z
  .object({
    /** `synthetic` or a path to a `.jsonl` / `.parquet` file. */
    source: path
      .refine((s) => s === 'synthetic' || /\.(jsonl|parquet)$/i.test(s), {
        message: "must be 'synthetic' or a path ending in .jsonl or .parquet",
      })
      .default('synthetic'),
    synthetic: z
      .object({
        writing: int(0, SYNTHETIC_LIMITS.writing).default(48),
        math: int(0, SYNTHETIC_LIMITS.math).default(48),
        seed: int(0, 0xffffffff).default(0),
      })
      .strict()
      .prefault({}),
    evalFraction: z.number().gt(0).lt(1).default(0.2),
    /** Counted as the model sees a prompt: with its chat template and BOS. */
    maxPromptTokens: int(1, 1_000_000).default(256),
    /**
     * `auto`: every prompt (rollout, evaluation, SFT, OPERA scoring) is formatted by the model's chat
     * template when `model.tokenizer` has one (tokenizer_config.json `chat_template` or
     * chat_template.jinja), as one user message plus the assistant's generation prompt, with thinking
     * enabled; `none`: BOS + the raw prompt. The byte tokenizer has no template.
     */
    chatTemplate: z.enum(CHAT_TEMPLATE_MODES).default('auto'),
  })
  .strict();

/**
 * Teacher sampling for cold-start synthesis; defaults come from coldstart.ts (OPERA.md: temperature
 * 0.6, top-p 0.95, top-k 20, k = 4 candidates, 20 reflections).
 */
const teacher = z
  .object({
    /** HF-style checkpoint directory of the teacher; absent → the run's initial model. */
    checkpoint: path.optional(),
    temperature: z.number().min(0).max(100).default(CS.temperature),
    topP: z.number().gt(0).max(1).default(CS.topP),
    topK: int(0, 1_000_000).default(CS.topK),
    candidates: int(1, 64).default(CS.candidates),
    maxReflections: int(0, 1000).default(CS.maxReflections),
    /** Token budget of one generation call (a step, a candidate, the closing step, the answer). */
    maxStepTokens: int(1, 100_000).default(CS.maxStepTokens),
    guidingWords: words(CS.guidingWords),
  })
  .strict();

const coldStart = z
  .object({
    enabled: z.boolean().default(true),
    /** false: SFT on the dataset's own traces (synthetic rows carry them); true: teacher synthesis. */
    synthesize: z.boolean().default(false),
    teacher: teacher.prefault({}),
    steps: int(0, 10_000_000).default(60),
    batchSize: int(1, 100_000).default(8),
    lr: positive.default(3e-3),
    warmupSteps: int(0, 10_000_000).default(5),
    weightDecay: z.number().min(0).max(1).default(0),
  })
  .strict();

const grpo = z
  .object({
    iterations: int(0, 1_000_000).default(4),
    promptsPerIteration: int(1, 100_000).default(8),
    /** At least 2: the group is each rollout's baseline (with 1, the advantage is the raw reward). */
    groupSize: int(2, 1024).default(4),
    /** Counted in sequences (rollouts) per optimizer step. */
    miniBatchSize: int(1, 100_000).default(8),
    epochs: int(1, 1000).default(1),
    lr: positive.default(1e-4),
    warmupSteps: int(0, 10_000_000).default(0),
    klCoef: z.number().min(0).default(LOSS.klCoef),
    clip: z.number().gt(0).lt(1).default(LOSS.clip),
    /** Asymmetric clip bounds (DAPO-style); each defaults to `clip` when absent. */
    clipLow: z.number().min(0).lt(1).optional(),
    clipHigh: positive.optional(),
    /** verl requires the dual-clip constant to exceed 1 (it bounds the loss of A<0 tokens). */
    dualClip: z.number().gt(1).default(LOSS.dualClip),
    aggregation: z.enum(['token-mean', 'seq-mean-token-mean'] satisfies LossAggregation[]).default(LOSS.aggregation),
    temperature: positive.max(100).default(1.0),
    topP: z.number().gt(0).max(1).default(1.0),
    topK: int(0, 1_000_000).default(0),
    maxNewTokens: int(1, 1_000_000).default(64),
  })
  .strict();

/** Defaults come from reward.ts and reward-kinds.ts, the implementation they configure. */
const reward = z
  .object({
    /** What advantages are computed from (opera/reward-kinds.ts); the OPERA settings below still shape the
     * OPERA components recorded for every kind. */
    kind: z.enum(REWARD_KINDS).default(DEFAULT_REWARD_KIND),
    pplWeight: z.number().min(0).max(1000).default(RW.pplWeight),
    reflectionWeight: z.number().min(0).max(1000).default(RW.reflectionWeight),
    emaAlpha: z.number().gt(0).max(1).default(RW.emaAlpha),
    emaMix: unit.default(RW.emaMix),
    keywords: words(RW.keywords),
    keywordMatch: z.enum(['word', 'substring']).default(RW.keywordMatch),
  })
  .strict();

const evalSection = z
  .object({
    /** Evaluate every this many iterations (0: only before training and at the end). */
    every: int(0, 1_000_000).default(2),
    prompts: int(1, 100_000).default(16),
    maxNewTokens: int(1, 1_000_000).default(64),
    /** 0 = greedy. */
    temperature: z.number().min(0).max(100).default(0),
  })
  .strict();

/** Where artifacts go: a directory (a path or file:// URI) or an object store (s3://bucket/prefix). */
const artifactsRoot = path.superRefine((value, ctx) => {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    // `s3:/bucket` or `file:x` is a mistyped URI, not a directory to create in the working directory.
    if (/^(s3|file):/i.test(value))
      ctx.addIssue({
        code: 'custom',
        message: `${value} is neither a directory nor a URI: write s3://bucket/prefix or file:///absolute/path`,
      });
    return;
  }
  if (scheme === 'file') {
    try {
      fileURLToPath(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `${value}: ${(err as Error).message} (write file:///absolute/path)` });
    }
    return;
  }
  if (scheme !== 's3') {
    ctx.addIssue({
      code: 'custom',
      message: `${scheme}:// is not a supported store: use a directory, file://…, or s3://bucket/prefix (GCS, R2, MinIO: through their S3 API, with OPERAFLOW_S3_ENDPOINT)`,
    });
    return;
  }
  try {
    parseS3Uri(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

/** `runtime.artifactsDir` is the key's name before object stores: configs (and recorded runs) that use it still load. */
const renamedArtifactsKey = (raw: unknown): unknown => {
  if (!raw || typeof raw !== 'object' || !('artifactsDir' in raw)) return raw;
  const { artifactsDir, ...rest } = raw as Record<string, unknown>;
  return 'artifacts' in rest ? raw : { ...rest, artifacts: artifactsDir };
};

const runtime = z.preprocess(
  renamedArtifactsKey,
  z
    .object({
      rolloutShards: int(1, 1024).default(2),
      continueAsNewEvery: int(1, 1_000_000).default(10),
      artifacts: artifactsRoot.default('.operaflow/artifacts'),
      providers: z.array(text(64)).min(1).max(8).default(['cpu']),
      maxStageAttempts: int(1, 100).default(3),
    })
    .strict(),
);

export const runConfigSchema = z
  .object({
    name: text(200),
    seed: z.number().int().min(0).max(0xffffffff).default(0),
    model: model.prefault({}),
    data: data.prefault({}),
    coldStart: coldStart.prefault({}),
    grpo: grpo.prefault({}),
    reward: reward.prefault({}),
    eval: evalSection.prefault({}),
    runtime: runtime.prefault({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    // A freshly initialised model as the teacher writes random bytes as "reasoning" and trains on them.
    if (c.coldStart.enabled && c.coldStart.synthesize && !c.coldStart.teacher.checkpoint && !c.model.checkpoint) {
      ctx.addIssue({
        code: 'custom',
        path: ['coldStart', 'synthesize'],
        message:
          'needs a trained teacher: set coldStart.teacher.checkpoint (or model.checkpoint, whose model then writes the traces); a freshly initialised model would write random text',
      });
    }
    // A checkpoint brings its architecture (config.json): overrides could only contradict its weights.
    if (c.model.checkpoint && c.model.config) {
      ctx.addIssue({
        code: 'custom',
        path: ['model', 'config'],
        message:
          "a run that starts from model.checkpoint takes its architecture from the checkpoint's config.json: remove model.config",
      });
    }
    // The preset with its overrides must be a model the engine can build (heads divide the width, …):
    // refused here, naming the key, not by a worker after the run is recorded.
    const merged = llamaConfigSchema.safeParse({ ...modelPresets[c.model.preset], ...c.model.config });
    if (merged.success) return;
    for (const issue of merged.error.issues) {
      ctx.addIssue({
        code: 'custom',
        path: ['model', 'config', ...issue.path.filter((k): k is string | number => typeof k !== 'symbol')],
        message: `${issue.message} (preset ${c.model.preset} with these overrides)`,
      });
    }
  });

export type RunConfig = z.infer<typeof runConfigSchema>;
/** The config as written in YAML (every defaulted key optional). */
export type RunConfigInput = z.input<typeof runConfigSchema>;
