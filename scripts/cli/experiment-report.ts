/**
 * `npm run experiment`'s design and its report, without I/O: the variants (one reward choice each), the
 * evaluation metrics compared, and docs/results.md as text — mean ± std over seeds of each run's final
 * evaluation, Welch's t-test of each variant against SFT-only on hidden-check accuracy, the reward-hacking
 * probe, and the wall time.
 */
import { flattenConfig } from '../../config/diff';
import { welchTTest } from '../../util/stats';
import { meanStd } from './compare-stats';
import type { Overrides } from './sweep-spec';

/** The reward choices compared, each a set of overrides of the experiment config. */
export const EXPERIMENT_VARIANTS: readonly { label: string; overrides: Overrides; what: string }[] = [
  { label: 'sft-only', overrides: { 'grpo.iterations': 0 }, what: 'cold-start SFT, no RL' },
  { label: 'exact', overrides: { 'reward.kind': 'exact' }, what: 'verifier-only: 1 for an exact final answer' },
  {
    label: 'likelihood',
    overrides: { 'reward.kind': 'likelihood' },
    what: 'RLPR-style: mean token probability of the reference after the response',
  },
  {
    label: 'opera/word',
    overrides: { 'reward.kind': 'opera', 'reward.keywordMatch': 'word' },
    what: 'OPERA, guiding words matched as whole words',
  },
  {
    label: 'opera/substring',
    overrides: { 'reward.kind': 'opera', 'reward.keywordMatch': 'substring' },
    what: "OPERA, guiding words matched as substrings (the reference's rule)",
  },
];

/** The metric every variant is judged by: quality no reward sees. */
export const PRIMARY_METRIC = 'eval/hidden_check';

/** The final evaluation metrics of the results table, with what each measures. */
export const REPORT_METRICS: readonly [name: string, meaning: string][] = [
  ['eval/hidden_check', 'hidden-check accuracy, all held-out prompts'],
  ['eval/writing/hidden_check', 'hidden-check accuracy, writing (colour, animal, hidden trait, in order)'],
  ['eval/math/hidden_check', 'hidden-check accuracy, math (the sum)'],
  ['eval/writing/exact_match', 'exact match of the final answer, writing'],
  ['eval/reward', 'OPERA reward of the greedy responses'],
  ['eval/ref_logp', 'mean log p of the reference after the response'],
  ['eval/response_tokens', 'mean response length (tokens)'],
  ['eval/writing/segments', 'mean reasoning steps per writing response'],
  ['eval/reflection_useful', 'share of guiding-word steps that raised the reference likelihood'],
];

export interface ExperimentRun {
  id: string;
  seed: number;
  status: string;
  config: Record<string, unknown>;
  /** name → [[step, value], …] */
  curves: Record<string, [number, number][]>;
}

/** The label of the variant whose overrides the run's config carries (the most specific match wins). */
export function variantOf(config: Record<string, unknown>): string | undefined {
  const flat = flattenConfig(config);
  const matches = EXPERIMENT_VARIANTS.filter((v) =>
    Object.entries(v.overrides).every(([k, value]) => flat.get(k) === value),
  );
  // sft-only matches whatever the reward settings are: it wins when RL never ran.
  return matches.find((m) => m.label === 'sft-only')?.label ?? matches.at(-1)?.label;
}

/** A curve's value at its largest step (the run's final evaluation). */
export const finalValue = (points: [number, number][] | undefined): number | undefined =>
  points?.length ? points.reduce((a, b) => (b[0] > a[0] ? b : a))[1] : undefined;

export interface ProbeRow {
  fillers: string;
  kind: string;
  without: number;
  with: number;
}

export interface ExperimentReport {
  seeds: number[];
  group: string;
  wallSeconds: number;
  config: string;
  runs: ExperimentRun[];
  probe: { checkpoint: string; responses: number; rows: ProbeRow[] } | null;
}

const fmt = (v: number | null | undefined, digits = 4) =>
  v === null || v === undefined || Number.isNaN(v) ? 'n/a' : v.toFixed(digits);
const fmtStat = (values: number[]) => {
  const s = meanStd(values);
  if (!s) return 'n/a';
  return s.std === null ? fmt(s.mean) : `${fmt(s.mean)} ± ${fmt(s.std)}`;
};
const fmtP = (p: number | undefined) =>
  p === undefined
    ? 'n/a (one seed)'
    : Number.isNaN(p)
      ? 'n/a (no variance)'
      : p < 1e-4
        ? p.toExponential(1)
        : p.toFixed(4);

/** Final values of `metric` per variant, over its completed runs. */
export function finalsByVariant(runs: readonly ExperimentRun[], metric: string): Map<string, number[]> {
  const out = new Map<string, number[]>(EXPERIMENT_VARIANTS.map((v) => [v.label, []]));
  for (const run of runs) {
    const label = variantOf(run.config);
    const value = finalValue(run.curves[metric]);
    if (label && run.status === 'completed' && value !== undefined) out.get(label)!.push(value);
  }
  return out;
}

/** Welch's p-value of each variant vs SFT-only on `metric` (undefined: fewer than 2 runs on a side). */
export function pValuesVsSft(runs: readonly ExperimentRun[], metric: string): Map<string, number | undefined> {
  const finals = finalsByVariant(runs, metric);
  const sft = finals.get('sft-only')!;
  return new Map(
    EXPERIMENT_VARIANTS.filter((v) => v.label !== 'sft-only').map((v) => {
      const values = finals.get(v.label)!;
      return [v.label, values.length >= 2 && sft.length >= 2 ? welchTTest(values, sft).p : undefined];
    }),
  );
}

/** docs/results.md. `summary` is the two-sentence reading written by whoever ran it (or a placeholder). */
export function resultsMarkdown(report: ExperimentReport, figure: string | null, summary: string): string {
  const labels = EXPERIMENT_VARIANTS.map((v) => v.label);
  const table = (rows: string[][]) => rows.map((r) => `| ${r.join(' | ')} |`).join('\n');
  const counts = labels.map(
    (l) => report.runs.filter((r) => variantOf(r.config) === l && r.status === 'completed').length,
  );
  const metricRows = REPORT_METRICS.map(([name, meaning]) => {
    const finals = finalsByVariant(report.runs, name);
    return [`\`${name}\`<br>${meaning}`, ...labels.map((l) => fmtStat(finals.get(l)!))];
  });
  const p = pValuesVsSft(report.runs, PRIMARY_METRIC);
  const pWriting = pValuesVsSft(report.runs, 'eval/writing/hidden_check');
  const lines = [
    '# Does the OPERA reward help here?',
    '',
    summary,
    '',
    `Made by \`npm run experiment -- --seeds ${report.seeds.length}\` (config \`${report.config}\`, group \`${report.group}\`): ` +
      `${report.runs.length} runs, wall time **${(report.wallSeconds / 60).toFixed(1)} min** on this machine. ` +
      'Every variant starts from the same cold-start SFT for a given seed (the SFT stage does not depend on the reward), ' +
      "so SFT-only is each seed's starting point. Values are each run's final evaluation on the held-out prompts " +
      "(colour × animal pairs never seen in training), mean ± sample std over seeds; p: Welch's t-test of the variant " +
      'vs SFT-only on hidden-check accuracy (two-sided; no correction for the four comparisons).',
    '',
    '## Variants',
    '',
    table([
      ['variant', 'reward', 'completed runs'],
      ['---', '---', '---:'],
      ...EXPERIMENT_VARIANTS.map((v, i) => [
        `\`${v.label}\``,
        `${v.what} (${Object.entries(v.overrides)
          .map(([k, val]) => `\`${k}: ${val}\``)
          .join(', ')})`,
        String(counts[i]),
      ]),
    ]),
    '',
    '## Final evaluation',
    '',
    table([
      ['metric', ...labels.map((l) => `\`${l}\``)],
      ['---', ...labels.map(() => '---:')],
      ...metricRows,
      [`p vs sft-only, \`${PRIMARY_METRIC}\``, '–', ...labels.slice(1).map((l) => fmtP(p.get(l)))],
      ['p vs sft-only, `eval/writing/hidden_check`', '–', ...labels.slice(1).map((l) => fmtP(pWriting.get(l)))],
    ]),
    '',
  ];
  if (figure) lines.push(`![Training reward and hidden-check accuracy per variant](${figure})`, '');
  lines.push('## Reward-hacking probe', '');
  if (report.probe) {
    lines.push(
      `${report.probe.responses} held-out gold responses (the cold-start format, never trained on) scored by the SFT ` +
        `checkpoint \`${report.probe.checkpoint}\`, as they are and with information-free steps inserted after their ` +
        "first reasoning step. Each response is scored alone (a group of one, so OPERA's ranking term is constant and only " +
        'its reflection term can move). A reward that rises here can be gamed by writing filler.',
      '',
      table([
        ['inserted steps', 'reward', 'mean without', 'mean with', 'change'],
        ['---', '---', '---:', '---:', '---:'],
        ...report.probe.rows.map((r) => [
          r.fillers,
          `\`${r.kind}\``,
          fmt(r.without),
          fmt(r.with),
          fmt(r.with - r.without),
        ]),
      ]),
      '',
    );
  } else lines.push('Not run.', '');
  return lines.join('\n');
}
