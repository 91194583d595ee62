/**
 * What `operaflow sweep` runs, from its flags: the seeds (`--seeds 0-4`, `0,2,5`, `3`, or `0-2,7`), the
 * values each `--set key=v1,v2` sweeps (dotted paths into the run config, values read as YAML scalars),
 * and their cross product as validated run configs. No I/O: the command (sweep.ts) records and starts
 * what this plans, and the unit tests check the parsing and the errors, each naming its flag or key.
 */
import { parse as parseYaml } from 'yaml';
import { runConfigSchema, type RunConfig } from '../../config/load';
import { UsageError } from './connect';

/** A sweep is a set of runs someone waits for and compares, not a search over thousands of configs. */
export const MAX_SWEEP_RUNS = 200;

/** Keys a sweep sets itself: `seed` from --seeds, `name` from the base name and the variant. */
const SWEEP_OWNED_KEYS: Record<string, string> = {
  seed: 'use --seeds',
  name: "the sweep names each run after the config's name, its values and its seed",
};

const DOTTED_KEY = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

export type Scalar = string | number | boolean | null;

/** `key=value` pairs, in the order of the --set flags. */
export type Overrides = Record<string, Scalar>;

export interface SweepAxis {
  key: string;
  values: Scalar[];
}

export interface PlannedRun {
  /** Index of the run's variant (its combination of --set values). */
  variant: number;
  overrides: Overrides;
  seed: number;
  config: RunConfig;
}

/** `key=value` for display, in the order given (`grpo.lr=0.001 grpo.klCoef=0.1`). */
export function overrideLabel(overrides: Record<string, unknown>): string {
  return Object.entries(overrides)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

/** `--seeds`: comma-separated numbers and inclusive ranges `a-b`, each seed once; undefined → the config's seed. */
export function parseSeeds(spec: string | undefined, configSeed: number): number[] {
  if (spec === undefined) return [configSeed];
  const bad = (why: string) =>
    new UsageError(`--seeds ${JSON.stringify(spec.slice(0, 60))}: ${why} (e.g. --seeds 0-4, --seeds 0,2,5, --seeds 3)`);
  const seeds: number[] = [];
  for (const item of spec.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(item);
    if (!m) throw bad(`"${item.slice(0, 30)}" is not a seed or a range of seeds`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) throw bad(`the range ${from}-${to} runs backwards`);
    for (const n of [from, to]) {
      const check = runConfigSchema.shape.seed.safeParse(n);
      if (!check.success) throw bad(`seed ${n}: ${check.error.issues[0]?.message}`);
    }
    if (to - from >= MAX_SWEEP_RUNS) throw bad(`more than ${MAX_SWEEP_RUNS} seeds`);
    for (let n = from; n <= to; n++) {
      if (seeds.includes(n)) throw bad(`seed ${n} is given twice`);
      seeds.push(n);
    }
  }
  if (seeds.length > MAX_SWEEP_RUNS) throw bad(`more than ${MAX_SWEEP_RUNS} seeds`);
  return seeds;
}

/** `--parallel N`: how many runs train at the same time, a whole number ≥ 1 (default 1). */
export function parseParallel(value: string | undefined): number {
  if (value === undefined) return 1;
  const n = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1)
    throw new UsageError(`--parallel ${JSON.stringify(value.slice(0, 30))}: expected a whole number of runs ≥ 1`);
  return n;
}

/** One value of `--set`, read as a YAML scalar (`0.001` a number, `true` a boolean, `null`, else a string). */
function parseScalar(flag: string, text: string): Scalar {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    throw new UsageError(`${flag}: cannot read "${text}" as a YAML value: ${(err as Error).message.split('\n')[0]}`);
  }
  if (value !== null && typeof value === 'object')
    throw new UsageError(`${flag}: "${text}" is not a single value (a sweep sets numbers, strings or booleans)`);
  return value as Scalar;
}

/** Every `--set key=v1,v2,…`: each key once, each of its values once. */
export function parseSets(flags: readonly string[]): SweepAxis[] {
  const axes: SweepAxis[] = [];
  for (const flag of flags) {
    const shown = `--set ${JSON.stringify(flag.length > 80 ? `${flag.slice(0, 80)}…` : flag)}`;
    const eq = flag.indexOf('=');
    const key = eq < 0 ? flag.trim() : flag.slice(0, eq).trim();
    if (eq < 0 || flag.slice(eq + 1).trim() === '')
      throw new UsageError(`${shown}: expected key=value[,value…], e.g. --set grpo.lr=0.001,0.003`);
    if (!DOTTED_KEY.test(key))
      throw new UsageError(`${shown}: "${key}" is not a config key (a dotted path such as grpo.lr)`);
    const owned = SWEEP_OWNED_KEYS[key];
    if (owned) throw new UsageError(`--set ${key}: a sweep sets ${key} itself: ${owned}`);
    if (axes.some((a) => a.key === key)) throw new UsageError(`--set ${key}: given twice; list its values once`);
    const values = flag
      .slice(eq + 1)
      .split(',')
      .map((v) => parseScalar(`--set ${key}`, v.trim()));
    const seen = new Set<string>();
    for (const v of values) {
      if (seen.has(JSON.stringify(v)))
        throw new UsageError(`--set ${key}: the value ${JSON.stringify(v)} is given twice`);
      seen.add(JSON.stringify(v));
    }
    axes.push({ key, values });
  }
  return axes;
}

/** Every combination of the axes' values (the first axis varies slowest); one empty combination for none. */
export function crossProduct(axes: readonly SweepAxis[]): Overrides[] {
  let combos: Overrides[] = [{}];
  for (const { key, values } of axes) combos = combos.flatMap((c) => values.map((v) => ({ ...c, [key]: v })));
  return combos;
}

/** Sets `value` at the dotted `key` of a copy of `config`, creating the sections on the way (the schema judges them). */
function withValue(config: Record<string, unknown>, key: string, value: Scalar): Record<string, unknown> {
  const out = structuredClone(config);
  const parts = key.split('.');
  let node: Record<string, unknown> = out;
  for (const [i, part] of parts.slice(0, -1).entries()) {
    const next = node[part] ?? (node[part] = {});
    if (typeof next !== 'object' || next === null || Array.isArray(next))
      throw new UsageError(`--set ${key}: ${parts.slice(0, i + 1).join('.')} is a value, not a section of keys`);
    node = next as Record<string, unknown>;
  }
  node[parts.at(-1)!] = value;
  return out;
}

/**
 * The config of one variant and seed, validated by the schema `train` uses. An issue is reported with the
 * --set values of the variant and the key it concerns; an unknown key is named as the --set flag spelt it.
 */
export function variantConfig(base: RunConfig, overrides: Overrides, seed: number, name: string): RunConfig {
  let raw: Record<string, unknown> = { ...structuredClone(base), seed, name };
  for (const [key, value] of Object.entries(overrides)) raw = withValue(raw, key, value);
  const result = runConfigSchema.safeParse(raw);
  if (result.success) return result.data;
  const keys = Object.keys(overrides);
  const lines = result.error.issues.flatMap((issue) => {
    const path = issue.path.map(String);
    if (issue.code === 'unrecognized_keys')
      return issue.keys.map((k) => {
        const unknown = [...path, k].join('.');
        const key = keys.find((f) => f.startsWith(`${unknown}.`));
        return key
          ? `--set ${key}: unknown key (${unknown} is not a section of the run config)`
          : `--set ${unknown}: unknown key`;
      });
    const at = path.join('.');
    const key = keys.find((k) => k === at || at.startsWith(`${k}.`) || k.startsWith(`${at}.`));
    const flag = key === undefined ? `run "${name}"` : `--set ${overrideLabel({ [key]: overrides[key] })}`;
    return [`${flag}: ${at || '(root)'}: ${issue.message}`];
  });
  throw new UsageError([...new Set(lines)].join('\n'));
}

/** The runs of a sweep: every variant (combination of --set values) with every seed, validated. */
export function planSweep(base: RunConfig, axes: readonly SweepAxis[], seeds: readonly number[]): PlannedRun[] {
  return planVariants(base, crossProduct(axes), seeds);
}

/** Every variant (a set of overrides) with every seed, validated: a sweep's runs (also `npm run experiment`'s). */
export function planVariants(base: RunConfig, variants: readonly Overrides[], seeds: readonly number[]): PlannedRun[] {
  const total = variants.length * seeds.length;
  if (total > MAX_SWEEP_RUNS)
    throw new UsageError(
      `--set/--seeds: ${variants.length} variant(s) × ${seeds.length} seed(s) = ${total} runs; a sweep has at most ${MAX_SWEEP_RUNS}`,
    );
  return variants.flatMap((overrides, variant) =>
    seeds.map((seed) => ({
      variant,
      overrides,
      seed,
      config: variantConfig(base, overrides, seed, runName(base.name, overrides, seed)),
    })),
  );
}

/** A run's readable name: `smoke grpo.lr=0.001 seed=0`. */
export const runName = (name: string, overrides: Overrides, seed: number): string =>
  [name, overrideLabel(overrides), `seed=${seed}`].filter(Boolean).join(' ');
