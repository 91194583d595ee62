import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configHash, loadRunConfig, parseRunConfig } from '../../opera/config';

const errorOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};

describe('run config', () => {
  it('fills every default from a minimal file', () => {
    const c = parseRunConfig('name: smoke\n', 'smoke.yaml');
    expect(c.seed).toBe(0);
    expect(c.model).toEqual({ preset: 'demo', tokenizer: 'byte' });
    expect(c.data.synthetic).toEqual({ writing: 48, math: 48, seed: 0 });
    expect(c.data.evalFraction).toBe(0.2);
    expect(c.coldStart.teacher.temperature).toBe(0.6);
    expect(c.grpo).toMatchObject({ groupSize: 4, clip: 0.2, dualClip: 3, klCoef: 0.001, aggregation: 'token-mean' });
    expect(c.grpo.clipLow).toBeUndefined();
    expect(c.reward.keywords).toEqual(['But', 'Wait', 'Hmm', 'However', 'Wait a minute']);
    expect(c.reward.keywordMatch).toBe('word');
    expect(c.eval.temperature).toBe(0);
    expect(c.runtime.providers).toEqual(['cpu']);
  });

  it('keeps values that are given, including LlamaConfig overrides', () => {
    const c = parseRunConfig(
      'name: x\nseed: 7\nmodel:\n  preset: tiny\n  config: { hidden_size: 32, num_hidden_layers: 1 }\ngrpo: { groupSize: 8, clipHigh: 0.28 }\n',
      'x.yaml',
    );
    expect(c.seed).toBe(7);
    expect(c.model.config).toEqual({ hidden_size: 32, num_hidden_layers: 1 });
    expect(c.grpo.groupSize).toBe(8);
    expect(c.grpo.clipHigh).toBe(0.28);
  });

  it('names file, line and key path for an unknown key', () => {
    const msg = errorOf(() => parseRunConfig('name: x\ngrpo:\n  groupSize: 4\n  groupSzie: 4\n', 'runs/a.yaml'));
    expect(msg).toBe('runs/a.yaml:4: grpo.groupSzie: unknown key');
  });

  it('names unknown LlamaConfig fields and top-level keys', () => {
    const msg = errorOf(() => parseRunConfig('name: x\nmodel:\n  config:\n    hidden_sise: 8\nextra: 1\n', 'b.yaml'));
    expect(msg).toContain('b.yaml:4: model.config.hidden_sise: unknown key');
    expect(msg).toContain('b.yaml:5: extra: unknown key');
  });

  it('names the key for a wrong type', () => {
    const msg = errorOf(() => parseRunConfig('name: x\ngrpo:\n  groupSize: four\n', 'c.yaml'));
    expect(msg).toMatch(/^c\.yaml:3: grpo\.groupSize: .*expected number/);
  });

  it('names the key for out-of-range values', () => {
    expect(errorOf(() => parseRunConfig('name: x\ngrpo: { groupSize: 0 }\n', 'd.yaml'))).toMatch(
      /^d\.yaml:2: grpo\.groupSize: .*>=1/,
    );
    expect(errorOf(() => parseRunConfig('name: x\ndata:\n  evalFraction: 1\n', 'd.yaml'))).toMatch(
      /^d\.yaml:3: data\.evalFraction: .*<1/,
    );
    expect(errorOf(() => parseRunConfig('name: x\ngrpo: { groupSize: 2.5 }\n', 'd.yaml'))).toMatch(/grpo\.groupSize/);
    expect(errorOf(() => parseRunConfig('name: x\nreward: { keywordMatch: regex }\n', 'd.yaml'))).toMatch(
      /^d\.yaml:2: reward\.keywordMatch: /,
    );
    expect(errorOf(() => parseRunConfig('name: x\ndata: { source: rows.csv }\n', 'd.yaml'))).toMatch(
      /data\.source: must be 'synthetic' or a path ending in \.jsonl or \.parquet/,
    );
  });

  it('reports a missing required key and broken YAML with a line', () => {
    expect(errorOf(() => parseRunConfig('seed: 1\n', 'e.yaml'))).toMatch(/^e\.yaml:1: name: /);
    expect(errorOf(() => parseRunConfig('name: x\ngrpo:\n  groupSize: [1\n', 'f.yaml'))).toMatch(
      /^f\.yaml:\d+: invalid YAML: /,
    );
    expect(errorOf(() => parseRunConfig('name: x\nname: y\n', 'g.yaml'))).toMatch(/^g\.yaml:2: invalid YAML: /);
  });

  it('loads from disk and names an unreadable path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'operaflow-config-'));
    const file = join(dir, 'run.yaml');
    writeFileSync(file, 'name: disk\n');
    expect(loadRunConfig(file).name).toBe('disk');
    expect(errorOf(() => loadRunConfig(join(dir, 'missing.yaml')))).toContain('missing.yaml: cannot read run config');
  });

  it('hashes the parsed config independently of key order and spelling of defaults', () => {
    const a = parseRunConfig('name: h\ngrpo: { groupSize: 4, clip: 0.2 }\nseed: 1\n', 'a.yaml');
    const b = parseRunConfig('seed: 1\ngrpo: { clip: 0.2 }\nname: h\n', 'b.yaml');
    const c = parseRunConfig('seed: 2\nname: h\n', 'c.yaml');
    expect(configHash(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(configHash(a)).toBe(configHash(b));
    expect(configHash(a)).not.toBe(configHash(c));
  });
});
