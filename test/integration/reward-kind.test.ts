/**
 * A smoke run with `reward.kind: likelihood` completes, and what it trained on is the likelihood reward:
 * every train sample's reward is its recorded `prob_full` (the mean per-token probability of the
 * reference), its advantage is GRPO's group normalisation of those values, and `reward/mean` is their
 * mean; the OPERA components and EMA are still recorded.
 */
import type { RunSummary } from '../../db/queries';
import { grpoAdvantages } from '../../opera/grpo';
import {
  lastLine,
  runCli,
  runIdOf,
  smokeYaml,
  tmpDir,
  writeConfig,
  type WorkerProcess,
  integrationFile,
} from './helpers';

jest.setTimeout(240_000);

const file = integrationFile('reward-kind');
const { env, db, started } = file;
let worker: WorkerProcess | undefined;

interface Row {
  split: string;
  iteration: number;
  prompt_id: string;
  reward: number;
  advantage: number | null;
  prob_full: number | null;
  ppl: number;
}

test('a likelihood run trains on the mean reference probability recorded as prob_full', async () => {
  worker = await file.worker();
  const yaml = `${smokeYaml({ name: 'reward-likelihood', artifacts: tmpDir() })}reward: { kind: likelihood }\n`;
  const res = await runCli(['train', writeConfig(yaml), '--wait', '--json'], env);
  try {
    started.push(runIdOf(res.stdout));
  } catch {
    // no summary line: the run was never started
  }
  if (res.code !== 0)
    throw new Error(`train exited ${res.code}\n${res.stderr}\n${res.stdout}\nworker:\n${worker.output()}`);
  const summary = JSON.parse(lastLine(res.stdout)) as RunSummary;
  expect(summary.status).toBe('completed');

  const { rows } = await db.query<Row>(
    'select split, iteration, prompt_id, reward, advantage, prob_full, ppl from samples where run_id = $1 order by split, iteration, prompt_id, sample_index',
    [summary.id],
  );
  expect(rows.length).toBeGreaterThan(0);
  for (const r of rows) {
    expect(r.prob_full).toBeGreaterThan(0); // recorded on train and eval rows alike
    expect(r.prob_full).toBeLessThanOrEqual(1);
  }
  const { rows: metrics } = await db.query<{ step: number; name: string; value: number }>(
    "select step, name, value from metrics where run_id = $1 and name in ('reward/mean', 'reward/ema')",
    [summary.id],
  );
  for (const iteration of [1, 2]) {
    const train = rows.filter((r) => r.split === 'train' && r.iteration === iteration);
    expect(train).toHaveLength(16);
    expect(train.map((r) => r.reward)).toEqual(train.map((r) => r.prob_full));
    const advantages = grpoAdvantages(
      train.map((r) => r.prob_full!),
      train.map((r) => r.prompt_id),
    );
    train.forEach((r, k) => expect(r.advantage).toBeCloseTo(advantages[k]!, 12));
    const mean = train.reduce((a, r) => a + r.prob_full!, 0) / train.length;
    const at = (name: string) => metrics.find((m) => m.step === iteration && m.name === name)?.value;
    expect(at('reward/mean')).toBeCloseTo(mean, 12);
    expect(at('reward/ema')).toEqual(expect.any(Number)); // the OPERA EMA is carried for every kind
  }
  // The OPERA components are still computed: a group's ranks 0..1 appear.
  expect(new Set(rows.filter((r) => r.split === 'train').map((r) => r.ppl)).size).toBeGreaterThan(1);
});
