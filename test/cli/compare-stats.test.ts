/**
 * `operaflow compare`'s arithmetic, without services: runs group into variants by their config (name,
 * seed and artifacts directory aside), variants are labelled by the keys that differ, and each metric's
 * final and best values are summarised as mean ± sample std over the variant's runs.
 */
import {
  METRIC_GOALS,
  compareVariants,
  groupVariants,
  meanStd,
  variantOverrides,
  type CompareRun,
} from '../../scripts/cli/compare-stats';

const config = (lr: number, extra: Record<string, unknown> = {}) => ({
  name: `x lr=${lr}`,
  seed: 0,
  grpo: { lr, iterations: 2 },
  runtime: { artifacts: `/tmp/${lr}`, rolloutShards: 2 },
  ...extra,
});

const run = (id: string, lr: number, seed: number, metrics: [number, string, number][]): CompareRun => ({
  id,
  seed,
  status: 'completed',
  config: { ...config(lr), seed, runtime: { artifacts: `/tmp/${id}`, rolloutShards: 2 } },
  summary: { evalBefore: { reward: 0.1 * (seed + 1) }, evalAfter: { reward: 0.2 * (seed + 1) } },
  metrics: metrics.map(([step, name, value]) => ({ step, name, value })),
});

test('meanStd: mean and the sample standard deviation (n − 1); one value has no std; none is null', () => {
  expect(meanStd([])).toBeNull();
  expect(meanStd([2])).toEqual({ mean: 2, std: null, n: 1 });
  expect(meanStd([1, 2, 3, 4])).toEqual({ mean: 2.5, std: Math.sqrt(5 / 3), n: 4 });
});

test('runs group by config without name, seed and artifacts directory, in order of appearance', () => {
  const runs = [
    { id: 'a', config: config(0.1) },
    { id: 'b', config: config(0.2) },
    { id: 'c', config: { ...config(0.1), seed: 5, name: 'other' } },
  ];
  expect(groupVariants(runs).map((v) => v.map((r) => r.id))).toEqual([['a', 'c'], ['b']]);
});

test('variants are labelled by the keys whose values differ, null where a variant lacks one', () => {
  expect(
    variantOverrides([config(0.1), config(0.2, { eval: { every: 2 } }), config(0.1, { eval: { every: 1 } })]),
  ).toEqual([
    { 'eval.every': null, 'grpo.lr': 0.1 },
    { 'eval.every': 2, 'grpo.lr': 0.2 },
    { 'eval.every': 1, 'grpo.lr': 0.1 },
  ]);
  expect(variantOverrides([config(0.1)])).toEqual([{}]);
});

test('final is the value at the largest step, best the max (rewards) or min (losses), each as mean ± std over seeds', () => {
  expect(METRIC_GOALS['eval/reward']).toBe('max');
  expect(METRIC_GOALS['train/loss']).toBe('min');
  expect(METRIC_GOALS['train/lr']).toBeUndefined();
  const report = compareVariants([
    // Steps out of order: final is the largest step's value, not the last row's.
    run('a0', 0.1, 0, [
      [2, 'eval/reward', 0.5],
      [0, 'eval/reward', 0.1],
      [1, 'eval/reward', 0.9],
      [1, 'train/loss', 3],
      [2, 'train/loss', 2],
      [2, 'train/lr', 1],
    ]),
    run('b0', 0.2, 0, [[2, 'eval/reward', 0.4]]),
    run('a1', 0.1, 1, [
      [0, 'eval/reward', 0.3],
      [2, 'eval/reward', 0.7],
      [1, 'train/loss', 1],
      [2, 'train/loss', 4],
    ]),
  ]);
  expect(report.map((v) => [v.label, v.runs, v.seeds, v.overrides])).toEqual([
    ['grpo.lr=0.1', ['a0', 'a1'], [0, 1], { 'grpo.lr': 0.1 }],
    ['grpo.lr=0.2', ['b0'], [0], { 'grpo.lr': 0.2 }],
  ]);
  const [a, b] = report;
  expect(a!.metrics['eval/reward']).toEqual({ final: meanStd([0.5, 0.7]), best: meanStd([0.9, 0.7]) });
  expect(a!.metrics['train/loss']).toEqual({ final: meanStd([2, 4]), best: meanStd([2, 1]) });
  // A metric one run lacks is summarised over the runs that have it; one without a goal has no best.
  expect(a!.metrics['train/lr']).toEqual({ final: { mean: 1, std: null, n: 1 }, best: null });
  expect(b!.metrics['eval/reward']).toEqual({
    final: { mean: 0.4, std: null, n: 1 },
    best: { mean: 0.4, std: null, n: 1 },
  });
  expect(a!.evalReward).toEqual({ before: meanStd([0.1, 0.2]), after: meanStd([0.2, 0.4]) });
  expect(a!.statuses).toEqual({ completed: 2 });
});

test('a single variant is labelled "all runs"', () => {
  expect(compareVariants([run('a', 0.1, 0, []), run('b', 0.1, 1, [])]).map((v) => v.label)).toEqual(['all runs']);
});
