/**
 * `npm run experiment [-- --seeds 5] [--config configs/experiment.yaml] [--group <name>] [--parallel 2]
 * [--out docs] [--summary "<text>"]`: does the OPERA reward help here? Runs SFT-only, `exact`,
 * `likelihood`, `opera/word` and `opera/substring` (scripts/cli/experiment-report.ts) over N seeds as
 * one sweep — runs of one group, through the durable sweep workflow, so a crash mid-experiment costs a
 * replay: run the command again with the printed `--group` and it waits for the same runs — then the
 * reward-hacking probe, and writes <out>/results.md and <out>/results.png.
 *
 * Starts the services if needed and a worker of its own (stopped at the end).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadRunConfig } from '../config/load';
import { runConfigSchema } from '../config/schema';
import { metricSeries, runsInGroup } from '../db/queries';
import { ensureServices } from '../services';
import { checkEnvironment } from '../util/env';
import { UsageError, connect } from './cli/connect';
import { renderExperimentFigure } from './cli/experiment-figure';
import { runProbe } from './cli/experiment-probe';
import { EXPERIMENT_VARIANTS, resultsMarkdown, variantOf, type ExperimentRun } from './cli/experiment-report';
import { parseParallel } from './cli/sweep-spec';
import { planVariants } from './cli/sweep-spec';
import { startSweep, waitForSweep } from './cli/sweep';
import { newRunId, resolvePaths } from './cli/train';
import { startWorker, stopWorker } from './cli/worker-process';

const PLACEHOLDER_SUMMARY =
  '*(Summary: not written yet — rerun with `--summary "<two sentences>"` after reading the table.)*';

function seedCount(value: string | undefined): number {
  const n = Number(value ?? 5);
  if (!Number.isInteger(n) || n < 1 || n > 40)
    throw new UsageError(`--seeds must be a whole number from 1 to 40, got "${value}"`);
  return n;
}

async function main(): Promise<number> {
  checkEnvironment();
  const { values: flags } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      seeds: { type: 'string' },
      config: { type: 'string' },
      group: { type: 'string' },
      parallel: { type: 'string' },
      out: { type: 'string' },
      summary: { type: 'string' },
    },
  });
  const seeds = Array.from({ length: seedCount(flags.seeds) }, (_, i) => i);
  const file = flags.config ?? join('configs', 'experiment.yaml');
  const parallel = parseParallel(flags.parallel ?? '2');
  const out = resolve(flags.out ?? 'docs');
  const base = loadRunConfig(file);
  const group = flags.group ?? newRunId(`experiment-${base.name}`);
  const t0 = Date.now();

  const services = await ensureServices({ log: (line) => console.error(`  ${line}`) });
  Object.assign(process.env, { DATABASE_URL: services.databaseUrl, TEMPORAL_ADDRESS: services.temporalAddress });
  const worker = await startWorker({ ...process.env });
  const s = await connect();
  try {
    if ((await runsInGroup(s.db.db, group)).length === 0) {
      const planned = planVariants(
        base,
        EXPERIMENT_VARIANTS.map((v) => v.overrides),
        seeds,
      ).map((p) => ({ ...p, config: resolvePaths(p.config) }));
      const runs = await startSweep(s, { file, planned, group, parallel });
      console.log(
        `experiment ${group}: ${runs.length} runs (${EXPERIMENT_VARIANTS.length} variants × ${seeds.length} seeds), ${parallel} at a time`,
      );
      console.log(`  interrupted? run it again with --group ${group}: the runs go on where they were`);
    } else console.log(`experiment ${group}: attaching to its recorded runs`);
    const rows = await waitForSweep(s, group, (line) => console.log(line));

    const runs: ExperimentRun[] = [];
    for (const r of rows) {
      const curves: ExperimentRun['curves'] = {};
      for (const m of await metricSeries(s.db.db, r.id)) (curves[m.name] ??= []).push([m.step, m.value]);
      runs.push({ id: r.id, seed: r.seed, status: r.status, config: r.config, curves });
    }
    const sft = rows
      .filter((r) => r.status === 'completed' && variantOf(r.config) === 'sft-only')
      .sort((a, b) => a.seed - b.seed)[0];
    console.log('experiment: the reward-hacking probe…');
    const probe = sft ? await runProbe(s.db.db, sft.id, runConfigSchema.parse(sft.config)) : null;

    mkdirSync(out, { recursive: true });
    const figure = join(out, 'results.png');
    console.log('experiment: the figure…');
    await renderExperimentFigure(runs, figure);
    // Wall time of the experiment itself: from its first run recorded to its last finished (a resumed
    // experiment counts the time it was down), plus this report.
    const first = Math.min(...rows.map((r) => r.createdAt.getTime()));
    const last = Math.max(...rows.map((r) => (r.finishedAt ?? new Date()).getTime()));
    const wallSeconds = (last - first + (Date.now() - Math.max(t0, last))) / 1000;
    const markdown = resultsMarkdown(
      { seeds, group, wallSeconds, config: file, runs, probe },
      relative(out, figure),
      flags.summary ?? PLACEHOLDER_SUMMARY,
    );
    writeFileSync(join(out, 'results.md'), markdown);
    console.log(`experiment: wrote ${join(out, 'results.md')} and ${figure} (${(wallSeconds / 60).toFixed(1)} min)`);
    return rows.every((r) => r.status === 'completed') ? 0 : 1;
  } finally {
    await s.close();
    await stopWorker(worker);
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(err instanceof UsageError ? `usage: ${err.message}` : err.message);
    process.exit(err instanceof UsageError ? 64 : 1);
  },
);
