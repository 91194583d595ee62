/**
 * The arithmetic of `operaflow compare`, without I/O: runs whose configs are equal but for the keys in
 * COMPARE_IGNORED_KEYS form one variant; a variant is labelled by the config keys whose values differ
 * between the variants; each metric's final and best value per run is summarised over the variant's
 * runs (its seeds) as mean ± sample standard deviation.
 */
import { canonicalJson } from '../../util/canonical';
import { differingKeys, flattenConfig } from '../../config/diff';
import { overrideLabel } from './sweep-spec';

/**
 * Config keys that do not make runs different variants: a run's name and seed (the seeds are what a
 * variant is averaged over) and where its files are written (not what is computed).
 */
export const COMPARE_IGNORED_KEYS = ['name', 'seed', 'runtime.artifacts'] as const;

/**
 * Which way is better, per metric (the README's "Metrics" table lists them): rewards and evaluation
 * scores up, losses down. A metric not listed (counts, the learning rate, KL, gradient norms) has no best.
 */
export const METRIC_GOALS: Readonly<Record<string, 'max' | 'min'>> = {
  'reward/mean': 'max',
  'reward/ppl': 'max',
  'reward/reflection': 'max',
  'reward/logp_full': 'max',
  'reward/ema': 'max',
  'reward/math_accuracy': 'max',
  'eval/reward': 'max',
  'eval/ppl': 'max',
  'eval/reflection': 'max',
  'eval/ref_logp': 'max',
  'eval/exact_match': 'max',
  'sft/loss': 'min',
  'train/loss': 'min',
  'train/pg_loss': 'min',
};

export interface CompareRun {
  id: string;
  seed: number;
  status: string;
  config: Record<string, unknown>;
  /** runs.summary: the evaluation before and after RL of a completed run. */
  summary: Record<string, unknown> | null;
  metrics: { step: number; name: string; value: number }[];
}

/** Mean and sample standard deviation (n − 1); `std` is null for a single value. */
export interface Stat {
  mean: number;
  std: number | null;
  n: number;
}

export interface VariantReport {
  label: string;
  overrides: Record<string, unknown>;
  runs: string[];
  seeds: number[];
  statuses: Record<string, number>;
  /** Mean reward of the held-out evaluation before RL and after it (completed runs). */
  evalReward: { before: Stat | null; after: Stat | null };
  metrics: Record<string, { final: Stat; best: Stat | null }>;
}

export function meanStd(values: readonly number[]): Stat | null {
  const n = values.length;
  if (n === 0) return null;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n === 1) return { mean, std: null, n };
  const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1);
  return { mean, std: Math.sqrt(variance), n };
}

/** Runs grouped into variants by their config without the ignored keys, in the order they first appear. */
export function groupVariants<R extends { config: Record<string, unknown> }>(runs: readonly R[]): R[][] {
  const byKey = new Map<string, R[]>();
  for (const run of runs) {
    const key = canonicalJson(Object.fromEntries(flattenConfig(run.config, COMPARE_IGNORED_KEYS)));
    byKey.set(key, [...(byKey.get(key) ?? []), run]);
  }
  return [...byKey.values()];
}

/** Per variant, the values of the keys that are not the same in every variant (null where a variant lacks the key). */
export function variantOverrides(configs: readonly Record<string, unknown>[]): Record<string, unknown>[] {
  const flat = configs.map((c) => flattenConfig(c, COMPARE_IGNORED_KEYS));
  const differing = differingKeys(flat);
  return flat.map((f) => Object.fromEntries(differing.map((k) => [k, f.get(k) ?? null])));
}

/** The run's value of each metric at its largest step, and its best value where the metric has a goal. */
function runValues(run: CompareRun): Map<string, { final: number; best: number | undefined }> {
  const out = new Map<string, { final: number; best: number | undefined; step: number }>();
  for (const m of run.metrics) {
    const goal = METRIC_GOALS[m.name];
    const seen = out.get(m.name);
    if (!seen) {
      out.set(m.name, { final: m.value, best: goal && m.value, step: m.step });
      continue;
    }
    if (m.step >= seen.step) Object.assign(seen, { final: m.value, step: m.step });
    if (goal === 'max' && m.value > seen.best!) seen.best = m.value;
    if (goal === 'min' && m.value < seen.best!) seen.best = m.value;
  }
  return out;
}

const evalReward = (run: CompareRun, when: 'evalBefore' | 'evalAfter'): number | undefined => {
  const reward = (run.summary?.[when] as { reward?: unknown } | null | undefined)?.reward;
  return typeof reward === 'number' ? reward : undefined;
};

const defined = <T>(values: (T | undefined)[]): T[] => values.filter((v): v is T => v !== undefined);

export function compareVariants(runs: readonly CompareRun[]): VariantReport[] {
  const variants = groupVariants(runs);
  const overrides = variantOverrides(variants.map((v) => v[0]!.config));
  return variants.map((members, i) => {
    const values = members.map(runValues);
    const names = [...new Set(values.flatMap((v) => [...v.keys()]))].sort();
    const metrics: VariantReport['metrics'] = {};
    for (const name of names) {
      metrics[name] = {
        final: meanStd(defined(values.map((v) => v.get(name)?.final)))!,
        best: meanStd(defined(values.map((v) => v.get(name)?.best))),
      };
    }
    const statuses: Record<string, number> = {};
    for (const r of members) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    return {
      label: overrideLabel(overrides[i]!) || 'all runs',
      overrides: overrides[i]!,
      runs: members.map((r) => r.id),
      seeds: members.map((r) => r.seed),
      statuses,
      evalReward: {
        before: meanStd(defined(members.map((r) => evalReward(r, 'evalBefore')))),
        after: meanStd(defined(members.map((r) => evalReward(r, 'evalAfter')))),
      },
      metrics,
    };
  });
}
