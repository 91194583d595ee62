/**
 * `operaflow export-metrics <run> [--format csv|jsonl]`: every metric a run recorded, one row per
 * (step, name, value), ordered by step then name, to stdout (pipe it to a file or another tool). CSV has
 * a header line; names are quoted when they hold a comma or a quote. Values are written as recorded
 * (shortest round-trip decimal), so the file re-reads to the same doubles.
 */
import { createDb } from '../../db/client';
import { metricSeries, requireRun } from '../../db/queries';
import { UsageError, endpoints, printOut } from './connect';

const FORMATS = ['csv', 'jsonl'] as const;
type Format = (typeof FORMATS)[number];

const csvField = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** The metric rows of a run in `format`, one string per line. */
export function metricLines(
  runId: string,
  rows: { step: number; name: string; value: number }[],
  format: Format,
): string[] {
  if (format === 'jsonl')
    return rows.map((r) => JSON.stringify({ run: runId, step: r.step, name: r.name, value: r.value }));
  return ['run,step,name,value', ...rows.map((r) => [csvField(runId), r.step, csvField(r.name), r.value].join(','))];
}

export async function exportMetrics(runId: string, flags: { format?: string }): Promise<number> {
  const format = (flags.format ?? 'csv') as Format;
  if (!FORMATS.includes(format))
    throw new UsageError(`export-metrics: --format must be csv or jsonl, got "${flags.format}"`);
  const db = createDb((await endpoints()).databaseUrl);
  try {
    await requireRun(db.db, runId);
    const lines = metricLines(runId, await metricSeries(db.db, runId), format);
    await printOut(lines.join('\n'));
    return 0;
  } finally {
    await db.close();
  }
}
