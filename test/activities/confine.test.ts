/**
 * A run cannot make a worker read or write outside the worker's roots (activities/confine.ts), symbolic
 * links included, and a file that is not valid JSON is reported without quoting it.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathsOutsideRoots } from '../../activities/confine';
import { parseRunConfig } from '../../config/load';
import { loadCheckpoint } from '../../engine/checkpoint';
import { tokenizerFromSpec } from '../../engine/tokenizer';

const base = mkdtempSync(join(tmpdir(), 'operaflow-confine-'));
const root = join(base, 'root');
const elsewhere = join(base, 'elsewhere');
mkdirSync(root);
mkdirSync(elsewhere);
afterAll(() => rmSync(base, { recursive: true, force: true }));

const config = (lines: string) => parseRunConfig(`name: c\n${lines}\n`, 'c.yaml');

test('paths under the roots pass; paths outside, or escaping through a symlink or "..", are named by key', () => {
  symlinkSync(elsewhere, join(root, 'link'));
  const inside = config(
    `runtime: { artifacts: ${join(root, 'artifacts', 'not-made-yet')} }\nmodel: { tokenizer: ${join(root, 'tok.json')} }`,
  );
  expect(pathsOutsideRoots(inside, [root])).toEqual([]);
  const outside = config(
    [
      `runtime: { artifacts: ${join(root, 'link', 'artifacts')} }`,
      `data: { source: ${join(root, '..', 'elsewhere', 'rows.jsonl')} }`,
      `model: { tokenizer: /etc/shadow, checkpoint: ${elsewhere} }`,
      `coldStart: { teacher: { checkpoint: ${join(root, 'teacher')} } }`,
    ].join('\n'),
  );
  expect(pathsOutsideRoots(outside, [root])).toEqual([
    `runtime.artifacts (${join(root, 'link', 'artifacts')})`,
    `data.source (${join(root, '..', 'elsewhere', 'rows.jsonl')})`,
    `model.checkpoint (${elsewhere})`,
    'model.tokenizer (/etc/shadow)',
  ]);
  // A file:// store is a path like any other; an object store is bounded by the worker's credentials.
  expect(pathsOutsideRoots(config(`runtime: { artifacts: "file://${elsewhere}/a" }`), [root])).toEqual([
    `runtime.artifacts (file://${elsewhere}/a)`,
  ]);
  expect(pathsOutsideRoots(config('runtime: { artifacts: "s3://bucket/runs" }'), [root])).toEqual([]);
  // The synthetic source and the byte tokenizer are no paths.
  expect(pathsOutsideRoots(config('data: { source: synthetic }'), [root])).toEqual([
    `runtime.artifacts (.operaflow/artifacts)`,
  ]);
});

test('a tokenizer.json or checkpoint config.json that is not JSON is reported without its contents', async () => {
  const secret = 'SECRET-7f3a91 root:x:0:0';
  const tok = join(elsewhere, 'tokenizer.json');
  writeFileSync(tok, secret);
  const tokError = await tokenizerFromSpec(tok).then(
    () => '',
    (e: Error) => e.message,
  );
  expect(tokError).toMatch(/is not valid JSON \(unexpected content/);
  expect(tokError).not.toContain('SECRET');
  const ckpt = join(elsewhere, 'ckpt');
  mkdirSync(ckpt);
  writeFileSync(join(ckpt, 'config.json'), `{"hidden_size": ${secret}`);
  const ckptError = await loadCheckpoint(ckpt).then(
    () => '',
    (e: Error) => e.message,
  );
  expect(ckptError).toMatch(/config\.json is not valid JSON \(unexpected content/);
  expect(ckptError).not.toContain('SECRET');
});
