/**
 * Bad input gets a clear error naming the file (and the key and line where there is one), fast, whatever
 * its size: oversized values, counts far past any run, GRPO without a group, a YAML alias bomb, 100 000
 * keys, 100 000 levels of nesting, a file over the size limit.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONFIG_LIMITS, loadRunConfig, parseRunConfig } from '../../config/load';

const errorOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};
const timed = (fn: () => unknown): { message: string; ms: number } => {
  const t0 = Date.now();
  const message = errorOf(fn);
  return { message, ms: Date.now() - t0 };
};

test.each([
  [
    'a name of 50 MB',
    `name: ${'x'.repeat(1000)}\n`,
    /^l\.yaml:1: name: Too big: expected string to have <=200 characters/,
  ],
  ['iterations: 1e9', 'name: x\ngrpo: { iterations: 1000000000 }\n', /^l\.yaml:2: grpo\.iterations: Too big/],
  ['groupSize: 200000', 'name: x\ngrpo: { groupSize: 200000 }\n', /^l\.yaml:2: grpo\.groupSize: Too big/],
  [
    'groupSize: 1 (no group baseline)',
    'name: x\ngrpo: { groupSize: 1 }\n',
    /^l\.yaml:2: grpo\.groupSize: Too small: expected number to be >=2/,
  ],
  [
    'more synthetic tasks than the family has',
    'name: x\ndata: { synthetic: { writing: 100000 } }\n',
    /^l\.yaml:2: data\.synthetic\.writing: Too big/,
  ],
  ['an infinite learning rate', 'name: x\ngrpo: { lr: .inf }\n', /^l\.yaml:2: grpo\.lr: /],
  [
    'hidden_size 33 with 4 heads',
    'name: x\nmodel: { preset: tiny, config: { hidden_size: 33 } }\n',
    /model\.config\.hidden_size: hidden_size must be divisible by num_attention_heads/,
  ],
])('%s is refused naming the key', (_label, yaml, message) => {
  expect(errorOf(() => parseRunConfig(yaml, 'l.yaml'))).toMatch(message);
});

test('a YAML alias bomb is refused without expanding it', () => {
  const bomb = [
    'name: x',
    'a: &a [x, x, x, x, x, x, x, x, x, x]',
    ...Array.from(
      { length: 9 },
      (_, k) =>
        `${String.fromCharCode(98 + k)}: &${String.fromCharCode(98 + k)} [${Array(10)
          .fill(`*${String.fromCharCode(97 + k)}`)
          .join(', ')}]`,
    ),
  ].join('\n');
  const { message, ms } = timed(() => parseRunConfig(bomb, 'bomb.yaml'));
  expect(message).toMatch(/^bomb\.yaml: invalid YAML: aliases expand too much/);
  expect(ms).toBeLessThan(5000);
});

test('100 000 unknown keys are refused quickly, naming the file', () => {
  const yaml = `name: x\ngrpo:\n${Array.from({ length: 100_000 }, (_, k) => `  k${k}: 1`).join('\n')}\n`;
  const { message, ms } = timed(() => parseRunConfig(yaml, 'keys.yaml'));
  expect(message).toMatch(/^keys\.yaml: /);
  expect(ms).toBeLessThan(10_000);
});

test('10 000 unknown keys: the first are located by line, the rest counted, all in bounded time', () => {
  const yaml = `name: x\ngrpo:\n${Array.from({ length: 5000 }, (_, k) => `  k${k}: 1`).join('\n')}\n`;
  const { message, ms } = timed(() => parseRunConfig(yaml, 'k.yaml'));
  const lines = message.split('\n');
  expect(lines[0]).toBe('k.yaml:3: grpo.k0: unknown key');
  expect(lines).toHaveLength(CONFIG_LIMITS.reported + 1);
  expect(lines.at(-1)).toMatch(/^k\.yaml: … and \d+ more problem\(s\)$/);
  expect(ms).toBeLessThan(10_000);
});

test('100 000 levels of nesting get a message with the file, not a stack overflow', () => {
  const flow = `name: x\ngrpo: ${'['.repeat(100_000)}${']'.repeat(100_000)}\n`;
  expect(errorOf(() => parseRunConfig(flow, 'deep.yaml'))).toMatch(
    /^deep\.yaml: (invalid YAML: it nests too deeply|the config nests)/,
  );
  const block = `name: x\n${Array.from({ length: 40 }, (_, k) => `${'  '.repeat(k)}k${k}:`).join('\n')} 1\n`;
  expect(errorOf(() => parseRunConfig(block, 'block.yaml'))).toMatch(
    /^block\.yaml: the config nests \d+ or more levels deep; a run config nests at most 32/,
  );
});

test('a config file over 1 MiB is refused before it is read', () => {
  const dir = mkdtempSync(join(tmpdir(), 'operaflow-limits-'));
  try {
    const file = join(dir, 'big.yaml');
    writeFileSync(file, `name: x\n# ${'y'.repeat(CONFIG_LIMITS.bytes)}\n`);
    expect(errorOf(() => loadRunConfig(file))).toMatch(
      new RegExp(
        `^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot read run config: it has \\d+ bytes; a run config may have at most ${CONFIG_LIMITS.bytes}`,
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
