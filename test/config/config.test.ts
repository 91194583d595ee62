import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configHash, loadRunConfig, parseRunConfig } from '../../config/load';

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
    expect(c.coldStart.teacher).toEqual({
      temperature: 0.6,
      topP: 0.95,
      topK: 20,
      candidates: 4,
      maxReflections: 20,
      maxStepTokens: 64,
      guidingWords: ['Wait', 'But', 'Hmm', 'Let me think', 'However'],
    });
    expect(c.grpo).toMatchObject({ groupSize: 4, clip: 0.2, dualClip: 3, klCoef: 0.001, aggregation: 'token-mean' });
    expect(c.grpo.clipLow).toBeUndefined();
    expect(c.reward.keywords).toEqual(['But', 'Wait', 'Hmm', 'However', 'Wait a minute']);
    expect(c.reward.keywordMatch).toBe('word');
    expect(c.eval.temperature).toBe(0);
    expect(c.runtime.providers).toEqual(['cpu']);
    // Catches: a wrong default for the data source, the cold-start switches or the artifact store.
    expect(c.data.source).toBe('synthetic');
    expect(c.coldStart).toMatchObject({ enabled: true, synthesize: false });
    expect(c.runtime.artifacts).toBe('.operaflow/artifacts');
  });

  // Catches: an allowed value rejected (a literal or enum entry lost, or a bound turned around: min ↔ max).
  it('accepts in-range values of every bounded teacher, sampling and list field', () => {
    const c = parseRunConfig(
      [
        'name: x',
        'model: { preset: bench, config: { rope_theta: 500000 } }',
        'data: { source: synthetic }',
        'coldStart: { teacher: { checkpoint: teachers/big, temperature: 0.7, topP: 0.9, guidingWords: [Wait, But] } }',
        'grpo: { topP: 0.9 }',
        'reward: { keywords: [Wait, Hmm] }',
        'eval: { temperature: 0.5 }',
        'runtime: { providers: [cuda, cpu] }',
      ].join('\n'),
      'ok.yaml',
    );
    expect(c.model).toMatchObject({ preset: 'bench', config: { rope_theta: 500000 } });
    expect(c.data.source).toBe('synthetic');
    expect(c.coldStart.teacher).toMatchObject({
      checkpoint: 'teachers/big',
      temperature: 0.7,
      topP: 0.9,
      guidingWords: ['Wait', 'But'],
    });
    expect(c.grpo.topP).toBe(0.9);
    expect(c.reward.keywords).toEqual(['Wait', 'Hmm']);
    expect(c.eval.temperature).toBe(0.5);
    expect(c.runtime.providers).toEqual(['cuda', 'cpu']);
  });

  // Catches: a bound dropped or turned around, or a list allowed to be empty (a run with no guiding
  // words or no execution provider would fail much later, or silently do nothing).
  it.each([
    ['model: { config: { hidden_act: gelu } }', 'model.config.hidden_act'],
    ['data: { source: rows.jsonl.csv }', 'data.source'],
    ["coldStart: { teacher: { checkpoint: '' } }", 'coldStart.teacher.checkpoint'],
    ['coldStart: { teacher: { temperature: -0.1 } }', 'coldStart.teacher.temperature'],
    ['coldStart: { teacher: { topP: 1.5 } }', 'coldStart.teacher.topP'],
    ['coldStart: { teacher: { guidingWords: [] } }', 'coldStart.teacher.guidingWords'],
    ["coldStart: { teacher: { guidingWords: [Wait, ''] } }", 'coldStart.teacher.guidingWords.1'],
    ['grpo: { topP: 1.01 }', 'grpo.topP'],
    ['reward: { keywords: [] }', 'reward.keywords'],
    ['eval: { temperature: -1 }', 'eval.temperature'],
    ['runtime: { providers: [] }', 'runtime.providers'],
  ])('rejects %s, naming %s', (yaml, key) => {
    expect(errorOf(() => parseRunConfig(`name: x\n${yaml}\n`, 'r.yaml'))).toMatch(
      new RegExp(`^r\\.yaml:2: ${key.replace(/\./g, '\\.')}: `),
    );
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

  it('accepts every documented key', () => {
    const text = [
      'name: full',
      'seed: 1234',
      'model: { preset: tiny, config: { hidden_size: 64, num_hidden_layers: 2 }, tokenizer: byte }',
      'data: { source: data/rows.jsonl, synthetic: { writing: 8, math: 8, seed: 1 }, evalFraction: 0.25, maxPromptTokens: 128 }',
      'coldStart: { enabled: true, synthesize: true, teacher: { checkpoint: teacher/, topK: 0, candidates: 2 }, steps: 10, batchSize: 4, lr: 0.001, warmupSteps: 2, weightDecay: 0.01 }',
      'grpo: { iterations: 2, promptsPerIteration: 4, groupSize: 2, miniBatchSize: 4, epochs: 1, lr: 0.0001, warmupSteps: 0,',
      '  klCoef: 0.001, clip: 0.2, clipLow: 0.2, clipHigh: 0.28, dualClip: 3, aggregation: seq-mean-token-mean,',
      '  temperature: 1.0, topP: 1.0, topK: 0, maxNewTokens: 32 }',
      'reward: { pplWeight: 0.3, reflectionWeight: 0.7, emaAlpha: 0.1, emaMix: 0.2, keywords: [Wait], keywordMatch: substring }',
      'eval: { every: 1, prompts: 4, maxNewTokens: 32, temperature: 0 }',
      'runtime: { rolloutShards: 1, continueAsNewEvery: 5, artifacts: /tmp/a, providers: [cpu], maxStageAttempts: 2 }',
    ].join('\n');
    const c = parseRunConfig(text, 'full.yaml');
    expect(c.grpo.aggregation).toBe('seq-mean-token-mean');
    expect(c.coldStart.teacher.candidates).toBe(2);
    expect(c.reward.keywordMatch).toBe('substring');
  });

  // Catches: overrides silently contradicting the weights of the checkpoint a run starts from.
  it("takes a checkpoint run's architecture from the checkpoint: model.config beside it is refused", () => {
    expect(
      parseRunConfig('name: c\nmodel: { checkpoint: ckpt/, tokenizer: ckpt/tokenizer.json }\n', 'c.yaml').model,
    ).toMatchObject({
      checkpoint: 'ckpt/',
    });
    expect(
      errorOf(() => parseRunConfig('name: c\nmodel: { checkpoint: ckpt/, config: { hidden_size: 64 } }\n', 'c.yaml')),
    ).toBe(
      "c.yaml:2: model.config: a run that starts from model.checkpoint takes its architecture from the checkpoint's config.json: remove model.config",
    );
  });

  it('names file, line and key path for an unknown key', () => {
    const msg = errorOf(() => parseRunConfig('name: x\ngrpo:\n  groupSize: 4\n  groupSzie: 4\n', 'runs/a.yaml'));
    expect(msg).toBe('runs/a.yaml:4: grpo.groupSzie: unknown key');
  });

  // Catches: several unknown keys of one object run together on one line.
  it('names each unknown key of one object on its own line', () => {
    expect(errorOf(() => parseRunConfig('name: x\ngrpo:\n  foo: 1\n  bar: 2\n', 'u.yaml'))).toBe(
      'u.yaml:3: grpo.foo: unknown key\nu.yaml:4: grpo.bar: unknown key',
    );
  });

  // Catches: several problems run together, or a line lost for an item of a list.
  it('reports every problem on its own line, list items at their own line', () => {
    const text = ['name: x', 'grpo: { groupSize: 0 }', 'reward:', '  keywords:', '    - Wait', "    - ''"].join('\n');
    expect(errorOf(() => parseRunConfig(text, 'm.yaml'))).toBe(
      'm.yaml:2: grpo.groupSize: Too small: expected number to be >=2\n' +
        'm.yaml:6: reward.keywords.1: Too small: expected string to have >=1 characters',
    );
  });

  // Catches: a value reached through a YAML alias reported as "required key is missing" (the walk to
  // the key stopped at the alias node), and its line lost.
  it('follows YAML aliases to the value that is wrong', () => {
    const text = ['name: x', 'eval: &e', '  maxNewTokens: big', 'grpo:', '  *e'].join('\n');
    const lines = errorOf(() => parseRunConfig(text, 'a.yaml'))
      .split('\n')
      .sort();
    // Both sections hold the same map; both errors point at line 3, where the bad value is written.
    expect(lines).toEqual([
      'a.yaml:3: eval.maxNewTokens: Invalid input: expected number, received string',
      'a.yaml:3: grpo.maxNewTokens: Invalid input: expected number, received string',
    ]);
  });

  // Catches: a line number or "(root)" invented for an empty file or a document that is not a map.
  it('reports an empty file without a line, and a non-map document at its root', () => {
    expect(errorOf(() => parseRunConfig('', 'e.yaml'))).toBe('e.yaml: name: required key is missing');
    expect(errorOf(() => parseRunConfig('# only a comment\n', 'e.yaml'))).toBe('e.yaml: name: required key is missing');
    expect(errorOf(() => parseRunConfig('hello\n', 'e.yaml'))).toBe(
      'e.yaml:1: (root): Invalid input: expected object, received string',
    );
  });

  // Catches: a made-up location for a key that cannot be found in the YAML: a collection used as a key
  // (`? [a]`) reaches zod as the string "[ a ]", which no scalar key matches, so at the top level (no
  // parent key to point at) the message has no line.
  it('names an unknown key it cannot locate, without a line', () => {
    expect(errorOf(() => parseRunConfig('? [extra]\n: 1\nname: x\n', 'k.yaml'))).toBe('k.yaml: [ extra ]: unknown key');
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
      /^d\.yaml:2: grpo\.groupSize: .*>=2/,
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
    expect(errorOf(() => parseRunConfig('seed: 1\n', 'e.yaml'))).toBe('e.yaml:1: name: required key is missing');
    // An empty value is present but null: a type error at its own line.
    expect(errorOf(() => parseRunConfig('name: x\ngrpo:\n  groupSize:\n', 'e.yaml'))).toMatch(
      /^e\.yaml:3: grpo\.groupSize: .*expected number, received null/,
    );
    expect(errorOf(() => parseRunConfig('name: x\ngrpo:\n  groupSize: [1\n', 'f.yaml'))).toMatch(
      /^f\.yaml:\d+: invalid YAML: /,
    );
    // Catches: the message's location suffix or context lines (prettyErrors) leaking in, or a lost first line.
    expect(errorOf(() => parseRunConfig('name: x\nname: y\n', 'g.yaml'))).toBe(
      'g.yaml:2: invalid YAML: Map keys must be unique',
    );
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

test('runtime.artifacts takes a directory, a file:// URI or s3://bucket/prefix; other stores and bad buckets are refused naming the key', () => {
  const parse = (value: string) =>
    parseRunConfig(`name: a\nruntime:\n  artifacts: ${JSON.stringify(value)}\n`, 'store.yaml').runtime.artifacts;
  expect(parse('s3://my-bucket/team/runs')).toBe('s3://my-bucket/team/runs');
  expect(parse('file:///srv/artifacts')).toBe('file:///srv/artifacts');
  expect(parse('/srv/artifacts')).toBe('/srv/artifacts');
  expect(() => parse('gs://my-bucket/runs')).toThrow(
    /store\.yaml:3: runtime\.artifacts: gs:\/\/ is not a supported store/,
  );
  expect(() => parse('s3://My_Bucket/runs')).toThrow(/store\.yaml:3: runtime\.artifacts: .*not a valid S3 bucket name/);
  expect(() => parse('s3://my-bucket/../x')).toThrow(
    /runtime\.artifacts: .*may not contain empty, \. or \.\. segments/,
  );
  expect(() => parse('s3://my-bucket//x')).toThrow(/runtime\.artifacts: .*may not contain empty/);
  // Mistyped URIs are refused, not created as directories named "s3:" or "file:".
  expect(() => parse('s3:/my-bucket/runs')).toThrow(
    /runtime\.artifacts: s3:\/my-bucket\/runs is neither a directory nor a URI/,
  );
  expect(() => parse('file://relative/x')).toThrow(
    /store\.yaml:3: runtime\.artifacts: file:\/\/relative\/x: .*write file:\/\/\/absolute\/path/,
  );
  // The key's name before object stores (configs and recorded runs that use it still load).
  expect(parseRunConfig('name: a\nruntime: { artifactsDir: /srv/old }\n', 'old.yaml').runtime.artifacts).toBe(
    '/srv/old',
  );
});
