/**
 * The experiment's figure (a PNG): the training reward and the held-out hidden-check accuracy over
 * iterations per variant (means over seeds), and the final hidden-check accuracy per variant (mean ±
 * std). Drawn by Observable Plot in headless chromium, the same library and browser as the dashboard.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium } from './chromium';
import {
  EXPERIMENT_VARIANTS,
  PRIMARY_METRIC,
  finalsByVariant,
  variantOf,
  type ExperimentRun,
} from './experiment-report';
import { meanStd } from './compare-stats';

const MODULES = join(__dirname, '..', '..', 'node_modules');

/** Per variant and step, the mean over its completed runs of `metric`. */
function meanCurves(runs: readonly ExperimentRun[], metric: string) {
  const sums = new Map<string, { variant: string; step: number; values: number[] }>();
  for (const run of runs) {
    const variant = variantOf(run.config);
    if (!variant || run.status !== 'completed') continue;
    for (const [step, value] of run.curves[metric] ?? []) {
      const key = `${variant}@${step}`;
      if (!sums.has(key)) sums.set(key, { variant, step, values: [] });
      sums.get(key)!.values.push(value);
    }
  }
  return [...sums.values()].map(({ variant, step, values }) => ({
    variant,
    step,
    value: values.reduce((a, b) => a + b, 0) / values.length,
  }));
}

/** Renders the figure to `file` (PNG). */
export async function renderExperimentFigure(runs: readonly ExperimentRun[], file: string): Promise<void> {
  const finals = finalsByVariant(runs, PRIMARY_METRIC);
  const data = {
    variants: EXPERIMENT_VARIANTS.map((v) => v.label),
    reward: meanCurves(runs, 'reward/mean'),
    hidden: meanCurves(runs, PRIMARY_METRIC),
    finals: EXPERIMENT_VARIANTS.map((v) => {
      const s = meanStd(finals.get(v.label)!);
      return { variant: v.label, mean: s?.mean ?? 0, std: s?.std ?? 0, n: s?.n ?? 0 };
    }),
  };
  const script = (path: string) => `<script>${readFileSync(join(MODULES, path), 'utf8')}</script>`;
  const html = `<!doctype html><html><head><meta charset="utf-8">
${script('d3/dist/d3.min.js')}${script('@observablehq/plot/dist/plot.umd.min.js')}
<style>body{margin:0;font-family:sans-serif;background:white}#figure{display:flex;gap:24px;padding:16px}h3{font-size:14px;margin:0 0 4px}</style>
</head><body><div id="figure"></div><script>
const data = ${JSON.stringify(data)};
const color = { domain: data.variants, legend: true };
const panel = (title, plot) => { const d = document.createElement('div'); const h = document.createElement('h3'); h.textContent = title; d.append(h, plot); document.getElementById('figure').append(d); };
panel('Training reward (reward/mean, each variant\\'s own reward)', Plot.plot({ width: 420, height: 300, color, x: { label: 'iteration' }, y: { grid: true, label: 'mean reward' },
  marks: [Plot.line(data.reward, { x: 'step', y: 'value', stroke: 'variant' }), Plot.dot(data.reward, { x: 'step', y: 'value', fill: 'variant', r: 2 })] }));
panel('Held-out hidden-check accuracy over training', Plot.plot({ width: 420, height: 300, color, x: { label: 'iteration' }, y: { grid: true, domain: [0, 1], label: 'accuracy' },
  marks: [Plot.line(data.hidden, { x: 'step', y: 'value', stroke: 'variant' }), Plot.dot(data.hidden, { x: 'step', y: 'value', fill: 'variant', r: 3 })] }));
panel('Final hidden-check accuracy (mean ± std over seeds)', Plot.plot({ width: 420, height: 300, marginBottom: 50, color: { domain: data.variants }, x: { domain: data.variants, label: null, tickRotate: -20 }, y: { grid: true, domain: [0, 1], label: 'accuracy' },
  marks: [Plot.barY(data.finals, { x: 'variant', y: 'mean', fill: 'variant' }), Plot.ruleX(data.finals, { x: 'variant', y1: (d) => Math.max(0, d.mean - d.std), y2: (d) => Math.min(1, d.mean + d.std), strokeWidth: 2 }), Plot.text(data.finals, { x: 'variant', y: 'mean', text: (d) => d.mean.toFixed(3), dy: -8 })] }));
</script></body></html>`;
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 420 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.setContent(html);
    if (errors.length) throw new Error(`the figure did not render: ${errors.join('; ')}`);
    await page.locator('#figure').screenshot({ path: file });
  } finally {
    await browser.close();
  }
}
