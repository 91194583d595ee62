/**
 * `operaflow sweep`'s flags, without services: seeds, --set values and --parallel parse as documented,
 * every variant is validated by the run config schema, and each mistake is an error naming its flag or key.
 */
import { parseRunConfig } from '../../config/load';
import {
  MAX_SWEEP_RUNS,
  crossProduct,
  parseParallel,
  parseSeeds,
  parseSets,
  planSweep,
  variantConfig,
} from '../../scripts/cli/sweep-spec';
import { smokeYaml } from '../integration/helpers';

const base = parseRunConfig(smokeYaml({ name: 'smoke', artifacts: '/tmp/a' }), 'smoke.yaml');

describe('--seeds', () => {
  test.each([
    ['0-4', [0, 1, 2, 3, 4]],
    ['0,2,5', [0, 2, 5]],
    ['3', [3]],
    ['0-2,7', [0, 1, 2, 7]],
    [' 1 - 2 ', [1, 2]],
  ])('%s', (spec, seeds) => expect(parseSeeds(spec, 9)).toEqual(seeds));
  test('absent: the config seed', () => expect(parseSeeds(undefined, 9)).toEqual([9]));
  test.each([
    ['x', /--seeds "x": "x" is not a seed/],
    ['', /--seeds "": "" is not a seed/],
    ['1.5', /is not a seed/],
    ['-1', /is not a seed/],
    ['4-0', /--seeds "4-0": the range 4-0 runs backwards/],
    ['0-2,1', /seed 1 is given twice/],
    ['4294967296', /seed 4294967296: Too big/],
    [`0-${MAX_SWEEP_RUNS}`, new RegExp(`more than ${MAX_SWEEP_RUNS} seeds`)],
  ])('%j is refused', (spec, message) => expect(() => parseSeeds(spec, 0)).toThrow(message));
});

describe('--parallel', () => {
  test('a whole number ≥ 1, default 1', () => {
    expect(parseParallel(undefined)).toBe(1);
    expect(parseParallel('3')).toBe(3);
  });
  test.each(['0', '-1', '1.5', 'two', ''])('%j is refused naming the flag', (v) =>
    expect(() => parseParallel(v)).toThrow(/^--parallel .*whole number of runs ≥ 1/),
  );
});

describe('--set', () => {
  test('values are YAML scalars; keys keep their order; the cross product varies the first key slowest', () => {
    const axes = parseSets(['grpo.lr=0.001,1e-3x', 'reward.keywordMode=word,substring', 'coldStart.enabled=true']);
    expect(axes).toEqual([
      { key: 'grpo.lr', values: [0.001, '1e-3x'] },
      { key: 'reward.keywordMode', values: ['word', 'substring'] },
      { key: 'coldStart.enabled', values: [true] },
    ]);
    expect(crossProduct(axes.slice(0, 2))).toEqual([
      { 'grpo.lr': 0.001, 'reward.keywordMode': 'word' },
      { 'grpo.lr': 0.001, 'reward.keywordMode': 'substring' },
      { 'grpo.lr': '1e-3x', 'reward.keywordMode': 'word' },
      { 'grpo.lr': '1e-3x', 'reward.keywordMode': 'substring' },
    ]);
    expect(crossProduct([])).toEqual([{}]);
  });
  test.each([
    ['grpo.lr', /--set "grpo.lr": expected key=value/],
    ['grpo.lr=', /--set "grpo.lr=": expected key=value/],
    ['grpo lr=1', /"grpo lr" is not a config key/],
    ['seed=1,2', /--set seed: a sweep sets seed itself: use --seeds/],
    ['name=x', /--set name: a sweep sets name itself/],
    ['grpo.lr=0.001,0.0010', /--set grpo.lr: the value 0.001 is given twice/],
    ['grpo.lr=[1,2]', /--set grpo.lr: cannot read|not a single value/],
    ['grpo.lr={a: 1}', /--set grpo.lr: .*not a single value/],
  ])('%j is refused naming the flag', (flag, message) => expect(() => parseSets([flag])).toThrow(message));
  test('a key given twice is refused', () =>
    expect(() => parseSets(['grpo.lr=1', 'grpo.lr=2'])).toThrow(/--set grpo.lr: given twice/));
});

describe('variant configs are validated by the run config schema', () => {
  test('a valid variant: the value, the seed and the name are set; the rest is the base config', () => {
    const config = variantConfig(base, { 'grpo.lr': 0.002 }, 3, 'smoke grpo.lr=0.002 seed=3');
    expect(config).toEqual({ ...base, seed: 3, name: 'smoke grpo.lr=0.002 seed=3', grpo: { ...base.grpo, lr: 0.002 } });
  });
  test('an optional section the base lacks may be set', () => {
    expect(variantConfig(base, { 'model.config.hidden_size': 32 }, 0, 'x').model.config).toEqual({ hidden_size: 32 });
  });
  test.each([
    [{ 'nosuch.key': 1 }, /^--set nosuch.key: unknown key \(nosuch is not a section of the run config\)$/],
    [{ 'grpo.nosuch': 1 }, /^--set grpo.nosuch: unknown key$/],
    [{ 'grpo.lr': 'abc' }, /^--set grpo.lr=abc: grpo.lr: Invalid input: expected number/],
    [{ 'grpo.clip': 1.5 }, /^--set grpo.clip=1.5: grpo.clip: Too big/],
    [{ 'grpo.lr.x': 1 }, /^--set grpo.lr.x: grpo.lr is a value, not a section of keys$/],
    [{ grpo: 1 }, /^--set grpo=1: grpo: Invalid input: expected object/],
  ])('%j is refused naming the key', (overrides, message) =>
    expect(() => variantConfig(base, overrides, 0, 'x')).toThrow(message),
  );
  test('planSweep: every variant with every seed, named after its values; too many runs are refused', () => {
    const runs = planSweep(base, parseSets(['grpo.lr=0.001,0.002']), [0, 1]);
    expect(runs.map((r) => [r.variant, r.seed, r.config.name, r.config.grpo.lr, r.config.seed])).toEqual([
      [0, 0, 'smoke grpo.lr=0.001 seed=0', 0.001, 0],
      [0, 1, 'smoke grpo.lr=0.001 seed=1', 0.001, 1],
      [1, 0, 'smoke grpo.lr=0.002 seed=0', 0.002, 0],
      [1, 1, 'smoke grpo.lr=0.002 seed=1', 0.002, 1],
    ]);
    expect(planSweep(base, [], [4]).map((r) => r.config.name)).toEqual(['smoke seed=4']);
    const many = Array.from({ length: 101 }, (_, i) => i + 1).join(',');
    expect(() => planSweep(base, parseSets([`grpo.iterations=${many}`]), [0, 1])).toThrow(
      /101 variant\(s\) × 2 seed\(s\) = 202 runs; a sweep has at most 200/,
    );
  });
});
