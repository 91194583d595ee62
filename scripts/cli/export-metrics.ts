/**
 * `operaflow export-metrics <run> | --group <name> [--format csv|jsonl]`: every metric the run (or each
 * run of the group, oldest first) recorded, one row per (run, step, name, value), ordered by run, then
 * step, then name, to stdout (pipe it to a file or another tool). CSV has a header line; fields are
 * quoted when they hold a comma or a quote. Values are written as recorded (shortest round-trip
 * decimal), so the file re-reads to the same doubles.
 */
import { createDb } from '../../db/client';
import { metricSeries } from '../../db/queries';
import { checkSelection, selectRuns } from './compare';
import { UsageError, endpoints, printOut } from './connect';

const FORMATS = ['csv', 'jsonl'] as const;
type Format = (typeof FORMATS)[number];

export interface MetricRow {
  run: string;
  step: number;
  name: string;
  value: number;
}

const csvField = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** Metric rows in `format`, one string per line. */
export function metricLines(rows: MetricRow[], format: Format): string[] {
  if (format === 'jsonl')
    return rows.map((r) => JSON.stringify({ run: r.run, step: r.step, name: r.name, value: r.value }));
  return ['run,step,name,value', ...rows.map((r) => [csvField(r.run), r.step, csvField(r.name), r.value].join(','))];
}

export async function exportMetrics(
  runId: string | undefined,
  flags: { format?: string; group?: string },
): Promise<number> {
  const format = (flags.format ?? 'csv') as Format;
  if (!FORMATS.includes(format))
    throw new UsageError(`export-metrics: --format must be csv or jsonl, got "${flags.format}"`);
  const ids = runId === undefined ? [] : [runId];
  checkSelection('export-metrics', '<run>', ids, flags.group);
  const db = createDb((await endpoints()).databaseUrl);
  try {
    const runs = await selectRuns(db.db, ids, flags.group);
    const rows: MetricRow[] = [];
    for (const run of runs) for (const m of await metricSeries(db.db, run.id)) rows.push({ run: run.id, ...m });
    await printOut(metricLines(rows, format).join('\n'));
    return 0;
  } finally {
    await db.close();
  }
}
