/**
 * Checkpoints as a Hugging Face model directory, so other tools load our weights and we load theirs:
 *   model.safetensors      weights under HF parameter names (the base weights only, under LoRA)
 *   adapter_config.json,   a model with a LoRA adapter: the adapter as PEFT writes it, so the directory is
 *   adapter_model.safetensors  both an HF checkpoint of the base and a PEFT adapter on it (lora.ts)
 *   optimizer.safetensors  AdamW moments of the trained parameters as `m.<name>` / `v.<name>`, step in the metadata
 *   config.json            the family's config fields + architectures / model_type
 *   trainer_state.json     whatever else decides future results (EMA baseline, data position, …)
 * Each file is written to a temporary name, fsynced and renamed, so a crash leaves either the old or
 * the new file, never a torn one.
 */
import { access, mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { hashFileCached, writeFileAtomic, type WrittenFile } from '../util/files';
import { jsonProblem } from '../util/json';
import { MODEL_TYPES, llamaConfigSchema, type LlamaConfig, type ModelType } from './config';
import { ROPE_TYPES } from './rope';
import { trainableShapes } from './llama';
import { isAdapterName, loadPeftAdapter, savePeftAdapter, type LoraSpec } from './lora';
import { parameterShapes, type Weights } from './model';
import { decodeSafetensors, encodeSafetensors, type TensorEntry } from './safetensors';
import type { OptimizerState } from './trainer';

export { decodeSafetensors, encodeSafetensors } from './safetensors';
export type { TensorEntry } from './safetensors';

export type CheckpointFile = WrittenFile;

export interface Checkpoint {
  config: LlamaConfig;
  weights: Weights;
  optimizer?: OptimizerState;
  extra?: Record<string, unknown>;
  /**
   * LoRA: the frozen base weights live in another checkpoint directory, referenced by `base.json` with
   * the sha256 of each of its files, so a checkpoint is the adapter alone (megabytes, not gigabytes).
   */
  base?: BaseRef;
}

/** A base checkpoint directory and the sha256 of the files its weights are read from. */
export interface BaseRef {
  dir: string;
  files: Record<string, string>;
}

/** The files of a checkpoint directory that hold its architecture and weights (sharded or not). */
async function weightFiles(dir: string): Promise<string[]> {
  const single = join(dir, CHECKPOINT_FILES.model);
  const index = `${single}.index.json`;
  if ((await exists(single)) || !(await exists(index))) return [CHECKPOINT_FILES.config, CHECKPOINT_FILES.model];
  const map = (JSON.parse(await readFile(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
  return [CHECKPOINT_FILES.config, `${CHECKPOINT_FILES.model}.index.json`, ...new Set(Object.values(map))].sort();
}

/** A reference to `dir` as the base of LoRA checkpoints: its weight files and their sha256. */
export async function baseRefOf(dir: string): Promise<BaseRef> {
  const files: Record<string, string> = {};
  for (const name of await weightFiles(dir)) files[name] = (await hashFileCached(join(dir, name))).sha256;
  return { dir: resolve(dir), files };
}

/** Refuses a base whose files are not the ones recorded (changed, missing, or more of them). */
async function verifyBase(base: BaseRef, from: string): Promise<void> {
  const problems: string[] = [];
  const present = await weightFiles(base.dir).catch(() => []);
  for (const name of new Set([...present, ...Object.keys(base.files)])) {
    const want = base.files[name];
    const got = await hashFileCached(join(base.dir, name)).then(
      (h) => h.sha256,
      () => undefined,
    );
    if (want === undefined) problems.push(`${name} is not recorded`);
    else if (got === undefined) problems.push(`${name} is missing`);
    else if (got !== want) problems.push(`${name} has sha256 ${got}, recorded ${want}`);
  }
  if (problems.length)
    throw new Error(`loadCheckpoint: the base ${base.dir} named by ${from} changed: ${problems.join('; ')}`);
}

/** A PEFT adapter's files (lora.ts), beside the base weights of a LoRA model's checkpoint. */
export const ADAPTER_FILES = { config: 'adapter_config.json', weights: 'adapter_model.safetensors' } as const;

export const CHECKPOINT_FILES = {
  model: 'model.safetensors',
  optimizer: 'optimizer.safetensors',
  config: 'config.json',
  trainerState: 'trainer_state.json',
} as const;

/** Where a LoRA checkpoint names the base checkpoint its frozen weights come from (see Checkpoint.base). */
export const BASE_FILE = 'base.json';

/** Every file a checkpoint directory may hold (what a verifier expects recorded, and nothing else). */
export const ALL_CHECKPOINT_FILES: readonly string[] = [
  ...Object.values(CHECKPOINT_FILES),
  ...Object.values(ADAPTER_FILES),
  BASE_FILE,
];

/** The LoRA adapter tensors of a model's weights, with their shapes (what savePeftAdapter writes). */
export function adapterTensors(config: LlamaConfig, weights: Weights): Map<string, TensorEntry> {
  const adapter = new Map([...weights].filter(([name]) => isAdapterName(name)));
  return shapedTensors(adapter, parameterShapes(config));
}

function shapedTensors(weights: Weights, shapes: Map<string, number[]>, prefix = ''): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [name, data] of [...weights].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const shape = shapes.get(name);
    if (shape === undefined) throw new Error(`saveCheckpoint: "${prefix}${name}" is not a parameter of this config`);
    out.set(prefix + name, { shape, data });
  }
  return out;
}

/** The transformers class of each family (config.json `architectures`). */
export const ARCHITECTURES: Record<ModelType, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
};

/** The HF config.json for `config`: its own fields plus what transformers needs to pick the class. */
export function hfConfigJson(config: LlamaConfig): Record<string, unknown> {
  const family = config.model_type ?? 'llama';
  const { lora: _lora, ...hf } = config; // an adapter is PEFT's own file (lora.ts), not a transformers field
  return {
    architectures: [ARCHITECTURES[family]],
    ...hf,
    model_type: family,
    num_key_value_heads: config.num_key_value_heads ?? config.num_attention_heads,
    hidden_act: 'silu',
    ...(family === 'qwen2' ? {} : { attention_bias: false }),
    mlp_bias: false,
    sliding_window: config.sliding_window ?? null,
    ...(family.startsWith('qwen') ? { use_sliding_window: config.sliding_window !== undefined } : {}),
    // The transformers 4.x layout, which 5.x reads as well.
    rope_scaling: config.rope_scaling ?? null,
    torch_dtype: 'float32',
  };
}

export async function saveCheckpoint(dir: string, ckpt: Checkpoint): Promise<CheckpointFile[]> {
  const all = parameterShapes(ckpt.config);
  const trained = trainableShapes(ckpt.config);
  const problems = checkTensors(withShapes(ckpt.weights, all), all);
  if (ckpt.optimizer !== undefined) {
    problems.push(
      ...checkTensors(withShapes(ckpt.optimizer.m, trained, 'm.'), trained, 'm.'),
      ...checkTensors(withShapes(ckpt.optimizer.v, trained, 'v.'), trained, 'v.'),
    );
    if (!Number.isSafeInteger(ckpt.optimizer.step) || ckpt.optimizer.step < 0)
      problems.push(`optimizer step: expected a non-negative integer got ${ckpt.optimizer.step}`);
  }
  if (problems.length > 0)
    throw new Error(`saveCheckpoint: ${dir}: weights do not match the config:\n  ${problems.join('\n  ')}`);
  await mkdir(dir, { recursive: true });
  const files: CheckpointFile[] = [];
  const baseWeights = new Map([...ckpt.weights].filter(([name]) => !isAdapterName(name)));
  const basePath = join(dir, BASE_FILE);
  if (ckpt.base && ckpt.config.lora) {
    // The frozen base is not written again: base.json names it (and the weights must still be its own).
    files.push(await writeFileAtomic(basePath, Buffer.from(`${JSON.stringify(ckpt.base, null, 2)}\n`)));
    await rm(join(dir, CHECKPOINT_FILES.model), { force: true });
  } else {
    await rm(basePath, { force: true });
    files.push(
      await writeFileAtomic(
        join(dir, CHECKPOINT_FILES.model),
        encodeSafetensors(shapedTensors(baseWeights, all), { format: 'pt' }),
      ),
    );
  }
  if (ckpt.config.lora) {
    // The base lives in the same directory: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(dir), dir).
    files.push(...(await savePeftAdapter(dir, ckpt.config.lora, adapterTensors(ckpt.config, ckpt.weights), '.')));
  } else {
    for (const f of Object.values(ADAPTER_FILES)) await rm(join(dir, f), { force: true }); // no stale adapter
  }
  const optimizerPath = join(dir, CHECKPOINT_FILES.optimizer);
  if (ckpt.optimizer !== undefined) {
    const { step, m, v } = ckpt.optimizer;
    const tensors = new Map([...shapedTensors(m, trained, 'm.'), ...shapedTensors(v, trained, 'v.')]);
    files.push(await writeFileAtomic(optimizerPath, encodeSafetensors(tensors, { step: String(step) })));
  } else {
    await rm(optimizerPath, { force: true }); // a stale file from an earlier save would resurrect old moments
  }
  files.push(
    await writeFileAtomic(
      join(dir, CHECKPOINT_FILES.config),
      Buffer.from(`${JSON.stringify(hfConfigJson(ckpt.config), null, 2)}\n`),
    ),
  );
  const statePath = join(dir, CHECKPOINT_FILES.trainerState);
  if (ckpt.extra !== undefined) {
    files.push(await writeFileAtomic(statePath, Buffer.from(`${JSON.stringify(ckpt.extra, null, 2)}\n`)));
  } else {
    await rm(statePath, { force: true });
  }
  return files;
}

/** Flat arrays carry no shape: take the expected one when the size fits, else report the flat length. */
function withShapes(weights: Weights, shapes: Map<string, number[]>, prefix = ''): Map<string, { shape: number[] }> {
  return new Map(
    [...weights].map(([name, data]) => {
      const shape = shapes.get(name);
      return [
        prefix + name,
        { shape: shape !== undefined && shape.reduce((a, b) => a * b, 1) === data.length ? shape : [data.length] },
      ];
    }),
  );
}

/** Lists missing names, unexpected names and wrong shapes (each with expected vs got). */
function checkTensors(
  tensors: Map<string, { shape: number[] }>,
  expected: Map<string, number[]>,
  prefix = '',
): string[] {
  const problems: string[] = [];
  const missing = [...expected.keys()].filter((n) => !tensors.has(prefix + n));
  const unexpected = [...tensors.keys()].filter((n) => !n.startsWith(prefix) || !expected.has(n.slice(prefix.length)));
  if (missing.length > 0) problems.push(`missing: ${missing.map((n) => prefix + n).join(', ')}`);
  if (unexpected.length > 0) problems.push(`unexpected: ${unexpected.join(', ')}`);
  for (const [name, shape] of expected) {
    const got = tensors.get(prefix + name)?.shape;
    if (got !== undefined && (got.length !== shape.length || got.some((d, i) => d !== shape[i]))) {
      problems.push(`${prefix}${name}: expected [${shape.join(', ')}] got [${got.join(', ')}]`);
    }
  }
  return problems;
}

/** Settings in a foreign config.json that would change the computation but that this engine does not implement. */
function unsupportedHfSettings(raw: Record<string, unknown>): string[] {
  const out: string[] = [];
  if (raw.hidden_act !== undefined && raw.hidden_act !== 'silu')
    out.push(`hidden_act "${String(raw.hidden_act)}" (only silu)`);
  const family = raw.model_type ?? 'llama';
  if (!(MODEL_TYPES as readonly unknown[]).includes(family))
    out.push(`model_type ${JSON.stringify(family)} (supported: ${MODEL_TYPES.join(', ')})`);
  const architectures = raw.architectures;
  if (Array.isArray(architectures)) {
    const known = new Set<unknown>(Object.values(ARCHITECTURES));
    const other = architectures.filter((a) => !known.has(a));
    if (other.length) out.push(`architectures ${JSON.stringify(other)} (supported: ${[...known].join(', ')})`);
  }
  if (raw.attention_bias === true && family !== 'qwen2')
    out.push('attention_bias true (only Qwen2 has projection biases: on q, k and v)');
  if (raw.mlp_bias === true) out.push('mlp_bias true (MLP projections have no bias)');
  if (Array.isArray(raw.layer_types) && raw.layer_types.some((t) => t !== 'full_attention'))
    out.push(`layer_types ${JSON.stringify([...new Set(raw.layer_types)])} (full attention only)`);
  const tp = raw.pretraining_tp;
  if (tp !== undefined && tp !== null && tp !== 1) out.push(`pretraining_tp ${JSON.stringify(tp)} (only 1)`);
  const partial = raw.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1)
    out.push(`partial_rotary_factor ${JSON.stringify(partial)} (RoPE on the whole head only)`);
  return out;
}

/**
 * RoPE settings from either config.json layout: transformers 4.x writes `rope_theta` and `rope_scaling`
 * at the top level, 5.x one `rope_parameters` object holding both. Reading only one layout silently ran
 * 5.x checkpoints with the default theta (10000).
 */
function ropeSettings(raw: Record<string, unknown>, file: string): { rope_theta?: unknown; rope_scaling?: unknown } {
  const params = raw.rope_parameters;
  const nested = params !== undefined && params !== null;
  if (nested && (typeof params !== 'object' || Array.isArray(params)))
    throw new Error(`${file}: rope_parameters must be an object, got ${JSON.stringify(params)}`);
  const source = nested ? (params as Record<string, unknown>) : ((raw.rope_scaling ?? {}) as Record<string, unknown>);
  const theta = nested ? source.rope_theta : raw.rope_theta;
  // transformers 4.x also accepted the older key `type` for the rope type.
  const { rope_theta: _theta, type, rope_type, ...rest } = source;
  const kind = rope_type ?? type ?? 'default';
  if (!ROPE_TYPES.includes(String(kind)))
    throw new Error(
      `${file}: unsupported settings: rope type ${JSON.stringify(kind)} (supported: ${ROPE_TYPES.join(', ')})`,
    );
  return {
    ...(theta !== undefined && theta !== null ? { rope_theta: theta } : {}),
    ...(kind === 'default' ? {} : { rope_scaling: { rope_type: kind, ...rest } }),
  };
}

export function parseHfConfig(raw: Record<string, unknown>, file: string): LlamaConfig {
  const unsupported = unsupportedHfSettings(raw);
  if (unsupported.length > 0) throw new Error(`${file}: unsupported settings: ${unsupported.join('; ')}`);
  // Foreign configs carry many fields we don't model (bos_token_id, torch_dtype, …): keep only ours.
  const known = new Set(Object.keys(llamaConfigSchema.shape));
  const special = new Set(['rope_theta', 'rope_scaling', 'sliding_window', 'lora']);
  const fields = Object.fromEntries(
    Object.entries(raw).filter(([k, v]) => known.has(k) && v !== null && !special.has(k)),
  );
  // Qwen configs carry a sliding_window that applies only with use_sliding_window; Mistral's always does.
  const windowed = raw.model_type === 'mistral' || raw.use_sliding_window === true;
  const window = windowed && raw.sliding_window !== null ? { sliding_window: raw.sliding_window } : {};
  const parsed = llamaConfigSchema.safeParse({ ...fields, ...ropeSettings(raw, file), ...window });
  if (!parsed.success) {
    throw new Error(
      `${file}: invalid config: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/**
 * A loaded base checkpoint with a PEFT adapter applied (`loadPeftAdapter(dir)`): the adapter's tensors
 * must be exactly those its spec implies for this model, shape for shape.
 */
export function attachAdapter(
  ckpt: Checkpoint,
  adapter: { spec: LoraSpec; tensors: Map<string, TensorEntry> },
  source = 'adapter',
): Checkpoint {
  const config: LlamaConfig = { ...ckpt.config, lora: adapter.spec };
  const shapes = new Map([...parameterShapes(config)].filter(([name]) => isAdapterName(name)));
  const problems = checkTensors(adapter.tensors, shapes);
  if (problems.length > 0) throw new Error(`${source} does not fit the model:\n  ${problems.join('\n  ')}`);
  const weights = new Map(ckpt.weights);
  for (const [name, t] of adapter.tensors) weights.set(name, t.data);
  return { config, weights };
}

function configDifferences(a: LlamaConfig, b: LlamaConfig): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)] as (keyof LlamaConfig)[]);
  const norm = (c: LlamaConfig, k: keyof LlamaConfig) =>
    k === 'num_key_value_heads'
      ? (c.num_key_value_heads ?? c.num_attention_heads)
      : k === 'model_type'
        ? (c.model_type ?? 'llama')
        : c[k];
  return [...keys]
    .filter((k) => JSON.stringify(norm(a, k)) !== JSON.stringify(norm(b, k)))
    .map((k) => `${k}: expected ${JSON.stringify(norm(a, k))} got ${JSON.stringify(norm(b, k))}`);
}

async function readOrExplain(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new Error(`loadCheckpoint: cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export interface LoadOptions {
  /**
   * Where the files of a LoRA checkpoint's base are on this machine (default: `base.dir` itself). The
   * artifact store passes one that fetches a base kept in an object store.
   */
  baseDir?: (base: BaseRef) => Promise<string>;
  /** Load the optimizer state when the directory has one (default true; inference needs only the weights). */
  optimizer?: boolean;
}

export async function loadCheckpoint(
  dir: string,
  expected?: LlamaConfig,
  options: LoadOptions = {},
): Promise<Checkpoint> {
  const configPath = join(dir, CHECKPOINT_FILES.config);
  let rawConfig: Record<string, unknown>;
  try {
    rawConfig = JSON.parse((await readOrExplain(configPath, 'config')).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(
      (err as Error).message.startsWith('loadCheckpoint')
        ? (err as Error).message
        : `loadCheckpoint: ${configPath} is not valid JSON (${jsonProblem(err)})`,
    );
  }
  let config = parseHfConfig(rawConfig, configPath);
  // A directory that is also a PEFT adapter (saved by a LoRA run): the adapter comes back with the weights.
  let adapter: Map<string, TensorEntry> | undefined;
  if (await exists(join(dir, ADAPTER_FILES.config))) {
    const peft = await loadPeftAdapter(dir);
    config = { ...config, lora: peft.spec };
    adapter = peft.tensors;
  }
  if (expected !== undefined) {
    const diffs = configDifferences(expected, config);
    if (diffs.length > 0)
      throw new Error(`loadCheckpoint: ${configPath} differs from the expected config: ${diffs.join('; ')}`);
  }
  const shapes = parameterShapes(config);

  let base: BaseRef | undefined;
  const basePath = join(dir, BASE_FILE);
  if (await exists(basePath)) {
    try {
      base = JSON.parse(await readFile(basePath, 'utf8')) as BaseRef;
    } catch (err) {
      throw new Error(`loadCheckpoint: ${basePath} is not valid JSON (${jsonProblem(err)})`);
    }
    if (!config.lora) throw new Error(`loadCheckpoint: ${basePath} names a base, but ${dir} holds no LoRA adapter`);
  }
  const baseDir = base && options.baseDir ? await options.baseDir(base) : base?.dir;
  if (base) await verifyBase({ ...base, dir: baseDir! }, basePath);
  const { tensors, source } = await readModelTensors(baseDir ?? dir);
  for (const [name, t] of adapter ?? []) tensors.set(name, t);
  // A tied model may still carry lm_head.weight (some exporters write it): drop it rather than fail.
  if (config.tie_word_embeddings && !shapes.has('lm_head.weight')) tensors.delete('lm_head.weight');
  const problems = checkTensors(tensors, shapes);
  if (problems.length > 0)
    throw new Error(`loadCheckpoint: ${source} does not match config.json:\n  ${problems.join('\n  ')}`);
  const weights: Weights = new Map([...shapes.keys()].map((n) => [n, tensors.get(n)!.data]));

  const result: Checkpoint = { config, weights, ...(base ? { base } : {}) };
  const optimizerPath = join(dir, CHECKPOINT_FILES.optimizer);
  if (options.optimizer !== false && (await exists(optimizerPath))) {
    const opt = decodeOrExplain(await readOrExplain(optimizerPath, 'optimizer state'), optimizerPath);
    const step = Number(opt.metadata.step);
    if (opt.metadata.step === undefined || !Number.isSafeInteger(step) || step < 0) {
      throw new Error(
        `loadCheckpoint: ${optimizerPath} metadata "step" must be a non-negative integer, got ${JSON.stringify(opt.metadata.step)}`,
      );
    }
    const m = new Map([...opt.tensors].filter(([n]) => n.startsWith('m.')));
    const v = new Map([...opt.tensors].filter(([n]) => n.startsWith('v.')));
    const other = [...opt.tensors.keys()].filter((n) => !n.startsWith('m.') && !n.startsWith('v.'));
    const trained = trainableShapes(config);
    const optProblems = [...checkTensors(m, trained, 'm.'), ...checkTensors(v, trained, 'v.')];
    if (other.length > 0) optProblems.push(`unexpected: ${other.join(', ')}`);
    if (optProblems.length > 0)
      throw new Error(`loadCheckpoint: ${optimizerPath} does not match config.json:\n  ${optProblems.join('\n  ')}`);
    const strip = (t: Map<string, TensorEntry>): Weights => new Map([...t].map(([n, e]) => [n.slice(2), e.data]));
    result.optimizer = { step, m: strip(m), v: strip(v) };
  }
  const statePath = join(dir, CHECKPOINT_FILES.trainerState);
  if (await exists(statePath)) {
    try {
      result.extra = JSON.parse((await readFile(statePath)).toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`loadCheckpoint: ${statePath} is not valid JSON (${jsonProblem(err)})`);
    }
  }
  return result;
}

/**
 * The weights from model.safetensors, or from the shards that model.safetensors.index.json lists
 * (how transformers saves anything over its shard size).
 */
async function readModelTensors(dir: string): Promise<{ tensors: Map<string, TensorEntry>; source: string }> {
  const single = join(dir, CHECKPOINT_FILES.model);
  const indexPath = `${single}.index.json`;
  if ((await exists(single)) || !(await exists(indexPath))) {
    return { tensors: decodeOrExplain(await readOrExplain(single, 'weights'), single).tensors, source: single };
  }
  let weightMap: Record<string, unknown>;
  try {
    weightMap =
      (JSON.parse((await readFile(indexPath)).toString('utf8')) as { weight_map?: Record<string, unknown> })
        .weight_map ?? {};
  } catch (err) {
    throw new Error(`loadCheckpoint: ${indexPath} is not valid JSON (${jsonProblem(err)})`);
  }
  const tensors = new Map<string, TensorEntry>();
  for (const shard of new Set(Object.values(weightMap).map(String))) {
    if (shard.includes('/') || shard.includes('\\'))
      throw new Error(`loadCheckpoint: ${indexPath} names shard "${shard}" outside the checkpoint directory`);
    const path = join(dir, shard);
    for (const [name, entry] of decodeOrExplain(await readOrExplain(path, 'weight shard'), path).tensors)
      tensors.set(name, entry);
  }
  return { tensors, source: indexPath };
}

function decodeOrExplain(buf: Buffer, path: string): ReturnType<typeof decodeSafetensors> {
  try {
    return decodeSafetensors(buf);
  } catch (err) {
    throw new Error(`loadCheckpoint: ${path}: ${(err as Error).message}`);
  }
}
