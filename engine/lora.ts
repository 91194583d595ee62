/**
 * LoRA adapters as PEFT defines them: for each targeted projection W ([out, in]) two trainable matrices
 * A ([rank, in]) and B ([out, rank]), and y = x·Wᵀ + (alpha/rank)·(x·Aᵀ)·Bᵀ with W frozen. Inside the
 * engine the adapter tensors sit beside the weights they adapt (`…q_proj.lora_A.weight`); on disk they
 * are PEFT's `adapter_config.json` + `adapter_model.safetensors` (names prefixed `base_model.model.`),
 * which `peft` loads, and a merged checkpoint is plain W + (alpha/rank)·B·A.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic, type WrittenFile } from '../util/files';
import { jsonFileProblem } from '../util/json';
import { decodeSafetensors, encodeSafetensors, type TensorEntry } from './safetensors';

/** The projections LoRA can target (PEFT's module names); the default targets all of them. */
export const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export const loraSchema = z
  .object({
    // PEFT's defaults (LoraConfig r=8, lora_alpha=8).
    rank: z.number().int().min(1).max(4096).default(8),
    alpha: z.number().positive().default(8),
    // Dropout on the adapter's input needs a mask per step that a resumed run can reproduce: not built yet.
    dropout: z
      .number()
      .min(0)
      .max(1)
      .default(0)
      .refine((d) => d === 0, { message: 'LoRA dropout is not implemented: set it to 0' }),
    // In one canonical order (PEFT stores a set): the same targets always compare and hash equal.
    targetModules: z
      .array(z.enum(LORA_TARGETS))
      .min(1)
      .transform((t) => LORA_TARGETS.filter((x) => t.includes(x)))
      .default([...LORA_TARGETS]),
  })
  .strict();
export type LoraSpec = z.infer<typeof loraSchema>;

export const loraScale = (spec: LoraSpec): number => spec.alpha / spec.rank;

const ADAPTER = /\.lora_[AB]\.weight$/;
/** Whether a parameter name is an adapter tensor (trainable under LoRA; everything else is frozen). */
export const isAdapterName = (name: string): boolean => ADAPTER.test(name);

/** The module (`model.layers.0.self_attn.q_proj`) of a targeted base weight, or undefined. */
export function targetedModule(weightName: string, spec: LoraSpec | undefined): string | undefined {
  if (!spec || !weightName.endsWith('.weight')) return undefined;
  const module = weightName.slice(0, -'.weight'.length);
  const leaf = module.slice(module.lastIndexOf('.') + 1);
  return module.startsWith('model.layers.') && (spec.targetModules as string[]).includes(leaf) ? module : undefined;
}

/** Adapter tensor shapes for base weight shapes: A [rank, in], B [out, rank] per targeted projection. */
export function loraShapes(base: Map<string, number[]>, spec: LoraSpec): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [name, [rows, cols]] of base) {
    const module = targetedModule(name, spec);
    if (!module) continue;
    out.set(`${module}.lora_A.weight`, [spec.rank, cols!]);
    out.set(`${module}.lora_B.weight`, [rows!, spec.rank]);
  }
  return out;
}

const PEFT_PREFIX = 'base_model.model.';

/** PEFT's adapter_config.json for `spec` (the fields `peft` reads to rebuild the adapter). */
export function peftConfigJson(spec: LoraSpec, base: string): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: base,
    r: spec.rank,
    lora_alpha: spec.alpha,
    lora_dropout: spec.dropout,
    target_modules: spec.targetModules,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
  };
}

/** Writes a PEFT adapter directory: adapter_config.json + adapter_model.safetensors. */
export async function savePeftAdapter(
  dir: string,
  spec: LoraSpec,
  adapter: Map<string, TensorEntry>,
  base: string,
): Promise<WrittenFile[]> {
  const tensors = new Map([...adapter].map(([name, t]) => [PEFT_PREFIX + name, t]));
  return [
    await writeFileAtomic(join(dir, 'adapter_model.safetensors'), encodeSafetensors(tensors, { format: 'pt' })),
    await writeFileAtomic(
      join(dir, 'adapter_config.json'),
      Buffer.from(`${JSON.stringify(peftConfigJson(spec, base), null, 2)}\n`),
    ),
  ];
}

/** Settings of a PEFT adapter_config.json that would change the computation and that this engine lacks. */
function unsupportedPeft(raw: Record<string, unknown>): string[] {
  const out: string[] = [];
  if (raw.peft_type !== undefined && raw.peft_type !== 'LORA') out.push(`peft_type ${JSON.stringify(raw.peft_type)}`);
  for (const flag of ['use_rslora', 'use_dora', 'fan_in_fan_out', 'lora_bias'])
    if (raw[flag] === true) out.push(`${flag} true`);
  if (raw.bias !== undefined && raw.bias !== 'none') out.push(`bias ${JSON.stringify(raw.bias)}`);
  for (const key of ['rank_pattern', 'alpha_pattern'])
    if (raw[key] && Object.keys(raw[key] as object).length > 0) out.push(`${key} (per-module ranks)`);
  if (Array.isArray(raw.modules_to_save) && raw.modules_to_save.length > 0) out.push('modules_to_save');
  if (raw.layers_to_transform !== undefined && raw.layers_to_transform !== null) out.push('layers_to_transform');
  return out;
}

/** Reads a PEFT LoRA adapter directory: its spec and its tensors under engine names. */
export async function loadPeftAdapter(dir: string): Promise<{ spec: LoraSpec; tensors: Map<string, TensorEntry> }> {
  const configPath = join(dir, 'adapter_config.json');
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${configPath}: ${jsonFileProblem(err)}`);
  }
  const unsupported = unsupportedPeft(raw);
  if (unsupported.length) throw new Error(`${configPath}: unsupported settings: ${unsupported.join('; ')}`);
  const targets = raw.target_modules;
  const parsed = loraSchema.safeParse({
    rank: raw.r,
    alpha: raw.lora_alpha,
    dropout: raw.lora_dropout ?? 0,
    targetModules: typeof targets === 'string' ? [targets] : targets,
  });
  if (!parsed.success)
    throw new Error(
      `${configPath}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
    );
  const weightsPath = join(dir, 'adapter_model.safetensors');
  const file = decodeSafetensors(await readFile(weightsPath));
  const tensors = new Map<string, TensorEntry>();
  for (const [name, t] of file.tensors) {
    if (!name.startsWith(PEFT_PREFIX) || !isAdapterName(name))
      throw new Error(`${weightsPath}: unexpected tensor ${name} (expected ${PEFT_PREFIX}….lora_A/B.weight)`);
    tensors.set(name.slice(PEFT_PREFIX.length), t);
  }
  return { spec: parsed.data, tensors };
}

/** W + (alpha/rank)·B·A for every targeted weight: a plain checkpoint that computes what base + adapter does. */
export function mergeLora(
  base: Map<string, Float32Array>,
  shapes: Map<string, number[]>,
  adapter: Map<string, Float32Array>,
  spec: LoraSpec,
): Map<string, Float32Array> {
  const scale = loraScale(spec);
  const merged = new Map<string, Float32Array>();
  for (const [name, w] of base) {
    const module = targetedModule(name, spec);
    const A = module && adapter.get(`${module}.lora_A.weight`);
    const B = module && adapter.get(`${module}.lora_B.weight`);
    if (!A || !B) {
      merged.set(name, w);
      continue;
    }
    const [rows, cols] = shapes.get(name)!;
    const r = spec.rank;
    const out = Float32Array.from(w);
    for (let i = 0; i < rows!; i++)
      for (let k = 0; k < r; k++) {
        const b = B[i * r + k]! * scale;
        if (b === 0) continue;
        for (let j = 0; j < cols!; j++) out[i * cols! + j] = out[i * cols! + j]! + b * A[k * cols! + j]!;
      }
    merged.set(name, out);
  }
  return merged;
}
