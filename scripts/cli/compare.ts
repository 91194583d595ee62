/**
 * `operaflow compare <run…> | --group <name> [--json]`: final and best metrics per variant, as mean ±
 * std over its seeds (compare-stats.ts does the arithmetic). `--json` prints
 * `{variants: [{label, overrides, runs, seeds, statuses, evalReward, metrics: {name: {final, best}}}]}`.
 */
import { metricSeries, requireRun, runsInGroup } from '../../db/queries';
import type { Run } from '../../db/schema';
import { createDb, type Db } from '../../db/client';
import { METRIC_GOALS, compareVariants, type CompareRun, type Stat, type VariantReport } from './compare-stats';
import { UsageError, endpoints, printOut } from './connect';

/** A command takes runs (`what`: `<run>` or `<run…>`) or --group: exactly one of the two (compare, export-metrics). */
export function checkSelection(command: string, what: string, ids: readonly string[], group: string | undefined): void {
  if (ids.length === 0 && group === undefined) throw new UsageError(`${command} needs ${what} or --group <name>`);
  if (ids.length > 0 && group !== undefined)
    throw new UsageError(`${command}: give ${what} or --group <name>, not both`);
}

/** The runs named (each must exist), or every run of the group (there must be one). */
export async function selectRuns(db: Db, ids: readonly string[], group: string | undefined): Promise<Run[]> {
  if (group === undefined) {
    const runs: Run[] = [];
    for (const id of new Set(ids)) runs.push(await requireRun(db, id));
    return runs;
  }
  const runs = await runsInGroup(db, group);
  if (runs.length === 0) throw new Error(`no runs in group "${group}" (see \`operaflow runs\`)`);
  return runs;
}

const num = (v: number) => (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3) ? v.toExponential(3) : v.toFixed(4));
const stat = (s: Stat | null | undefined) =>
  !s ? '—' : s.std === null ? num(s.mean) : `${num(s.mean)} ± ${num(s.std)}`;

/** Rows of cells as aligned columns, the first left-aligned and the rest right-aligned. */
function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join('   ')
      .trimEnd(),
  );
}

function printReport(variants: VariantReport[], runCount: number): void {
  const differ = Object.keys(variants[0]!.overrides);
  console.log(
    `${runCount} run(s) in ${variants.length} variant(s)${differ.length ? ` (differing in ${differ.join(', ')})` : ''}; mean ± std over seeds (sample std; a single seed shows its value)`,
  );
  console.log('');
  for (const line of table([
    ['variant', 'runs', 'seeds', 'status', 'eval reward before RL', 'after RL'],
    ...variants.map((v) => [
      v.label,
      String(v.runs.length),
      v.seeds.join(','),
      Object.entries(v.statuses)
        .map(([s, n]) => `${n} ${s}`)
        .join(', '),
      stat(v.evalReward.before),
      stat(v.evalReward.after),
    ]),
  ]))
    console.log(line);
  const names = [...new Set(variants.flatMap((v) => Object.keys(v.metrics)))].sort();
  for (const [title, pick] of [
    ['final (value at the last step)', (v: VariantReport, n: string) => stat(v.metrics[n]?.final)],
    ['best over steps (↑ max, ↓ min)', (v: VariantReport, n: string) => stat(v.metrics[n]?.best)],
  ] as const) {
    const shown = title.startsWith('best') ? names.filter((n) => METRIC_GOALS[n]) : names;
    const arrow = (n: string) => (title.startsWith('best') ? ` ${METRIC_GOALS[n] === 'max' ? '↑' : '↓'}` : '');
    console.log('');
    for (const line of table([
      [title, ...variants.map((v) => v.label)],
      ...shown.map((n) => [`${n}${arrow(n)}`, ...variants.map((v) => pick(v, n))]),
    ]))
      console.log(line);
  }
}

export async function compare(ids: string[], flags: { group?: string; json?: boolean }): Promise<number> {
  checkSelection('compare', '<run…>', ids, flags.group);
  const db = createDb((await endpoints()).databaseUrl);
  try {
    const runs = await selectRuns(db.db, ids, flags.group);
    const input: CompareRun[] = [];
    for (const r of runs)
      input.push({
        id: r.id,
        seed: r.seed,
        status: r.status,
        config: r.config,
        summary: r.summary ?? null,
        metrics: await metricSeries(db.db, r.id),
      });
    const variants = compareVariants(input);
    if (flags.json) await printOut(JSON.stringify({ variants }));
    else printReport(variants, runs.length);
    return 0;
  } finally {
    await db.close();
  }
}
