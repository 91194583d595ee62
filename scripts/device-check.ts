/**
 * The figures of scripts/device-check.sh, on execution providers `--providers` (default cuda) against
 * the CPU provider; prints one JSON line (the last stdout line), exits 1 when a check fails:
 * - logits of modelPresets.bench on a batch of 4 × 64 tokens: max |difference| ≤ 1e-3;
 * - one SFT step (forward, backward, AdamW) from the same weights: max |difference| of the new weights ≤ 1e-4;
 * - `npm run bench -- --providers … --quick --json` (its JSON line, kept whole);
 * - a smoke run (configs/smoke.yaml with runtime.providers set to the providers, via `npm start`):
 *   completed, its wall time, and the providers every model stage recorded.
 * `--providers cpu` runs the whole check on a machine without a GPU (every difference is then 0): how
 * the script itself is tested.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { modelPresets } from '../engine/config';
import { LlamaModel, causalBias, initWeights } from '../engine/model';
import { uniform } from '../engine/rng';
import { Trainer } from '../engine/trainer';
import { maxAbsDiff } from '../util/stats';
import { parseProviders } from './cli/gpu';

const ROOT = resolve(__dirname, '..');
const config = modelPresets.bench;
const tokens = (n: number, stream: number) =>
  Array.from({ length: n }, (_, k) => Math.floor(uniform(7, [stream], k) * config.vocab_size));

async function logits(providers: string[]): Promise<Float32Array> {
  const model = new LlamaModel(config, initWeights(config, 1), { providers });
  const rows = [0, 1, 2, 3].map((b) => tokens(64, b));
  const out = await model.forward({
    tokens: rows,
    positions: rows.map((r) => r.map((_, k) => k)),
    attnBias: causalBias(
      rows.map(() => 64),
      64,
    ),
  });
  return out.logits;
}

/**
 * AdamW's eps is 1e-4 here, not 1e-8: with a tiny eps the first step moves every weight by ±lr whatever
 * the size of its gradient, so a gradient within rounding of zero can flip a weight by 2·lr between any
 * two runs (CPU against CPU gave 2e-3 once, with lr 1e-3). With eps above the rounding noise the step is
 * a smooth function of the gradient, and a difference in the weights is a difference in what was computed.
 */
async function sftStepWeights(providers: string[]): Promise<Map<string, Float32Array>> {
  const model = new LlamaModel(config, initWeights(config, 1), { providers });
  const batch = [0, 1, 2, 3].map((b) => {
    const t = tokens(129, 10 + b);
    return { tokens: t, lossMask: t.map((_, k) => (k === 0 ? 0 : 1)) };
  });
  await new Trainer(model, { eps: 1e-4 }).sftStep(batch, 1e-3);
  return model.weights;
}

/** The last stdout line of a command, as JSON. */
function lastJson(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const out = execFileSync(cmd, args, { cwd: ROOT, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** configs/smoke.yaml on `providers` through `npm start`; the providers its model stages recorded. */
function smokeRun(providers: string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'operaflow-device-check-'));
  const raw = parse(readFileSync(join(ROOT, 'configs', 'smoke.yaml'), 'utf8')) as Record<string, unknown>;
  const name = `device-check-${process.pid}`;
  const runtime = { ...(raw.runtime as object), providers, artifacts: join(dir, 'artifacts') };
  writeFileSync(join(dir, 'smoke.yaml'), stringify({ ...raw, name, runtime }));
  const t0 = performance.now();
  const start = spawnSync('npm', ['start', '--', join(dir, 'smoke.yaml')], {
    cwd: ROOT,
    env: { ...process.env, OPERAFLOW_UI_PORT: '0' },
    stdio: ['ignore', process.stderr, 'inherit'],
  });
  const seconds = (performance.now() - t0) / 1000;
  const runs = lastJson(process.execPath, ['--import', 'tsx', 'scripts/operaflow.ts', 'runs', '--json']) as unknown;
  const run = (runs as { id: string; name: string }[]).find((r) => r.name === name);
  if (!run) return { smokeRunCompleted: false, smokeRunSeconds: seconds, smokeRunProviders: [] as string[] };
  const summary = lastJson(process.execPath, ['--import', 'tsx', 'scripts/operaflow.ts', 'show', run.id, '--json']) as {
    status: string;
    stages: { attempts: { providers: string | null }[] }[];
  };
  const recorded = [...new Set(summary.stages.flatMap((s) => s.attempts.map((a) => a.providers)).filter(Boolean))];
  return {
    smokeRunCompleted: start.status === 0 && summary.status === 'completed',
    smokeRunSeconds: seconds,
    smokeRunProviders: recorded as string[],
  };
}

async function main(): Promise<number> {
  const k = process.argv.indexOf('--providers');
  const providers = parseProviders(k > 0 ? (process.argv[k + 1] ?? '') : 'cuda', '--providers');
  console.error(`device check on providers ${providers.join(',')}: logits and one SFT step against the CPU...`);
  const logitsMaxAbsDiff = maxAbsDiff(await logits(providers), await logits(['cpu']));
  const [onDevice, onCpu] = [await sftStepWeights(providers), await sftStepWeights(['cpu'])];
  const sftWeightsMaxAbsDiff = Math.max(...[...onCpu].map(([name, w]) => maxAbsDiff(w, onDevice.get(name)!)));
  console.error(
    `  logits ${logitsMaxAbsDiff.toExponential(2)}, SFT step weights ${sftWeightsMaxAbsDiff.toExponential(2)}; bench...`,
  );
  const bench = lastJson('npm', [
    'run',
    '--silent',
    'bench',
    '--',
    '--providers',
    providers.join(','),
    '--quick',
    '--json',
  ]);
  console.error('  smoke run...');
  const smoke = smokeRun(providers);
  const ok =
    logitsMaxAbsDiff <= 1e-3 &&
    sftWeightsMaxAbsDiff <= 1e-4 &&
    smoke.smokeRunCompleted &&
    smoke.smokeRunProviders.every((p) => p === providers.join(','));
  console.log(
    JSON.stringify({ ok, providers: providers.join(','), logitsMaxAbsDiff, sftWeightsMaxAbsDiff, ...smoke, bench }),
  );
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    console.log(JSON.stringify({ ok: false, error: err instanceof Error ? err.message : String(err) }));
    process.exit(1);
  },
);
