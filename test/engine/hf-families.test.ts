/**
 * Real checkpoints, as transformers writes and computes them: for every family and config layout in
 * test/fixtures/hf/ (made by scripts/fixtures/make_hf_fixtures.py with transformers itself), the engine's
 * logits equal transformers' within 1e-4, greedy decoding picks the same tokens, and a checkpoint we save
 * keeps the family (model_type, architectures, parameter names) and reloads to identical logits.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint, saveCheckpoint } from '../../engine/checkpoint';
import { LlamaModel } from '../../engine/model';
import { sample } from '../../engine/sampler';
import { idTokenizer, logitsOf, maxAbsDiff } from './helpers';

const FIXTURES = join(__dirname, '..', 'fixtures', 'hf');

interface Expected {
  input_ids: number[][];
  logits: number[][][];
  greedy: { prompt: number[]; tokens: number[] };
  long?: { input_ids: number[][]; logits_last: number[] };
}

const checkpoints = readdirSync(FIXTURES, { withFileTypes: true })
  .filter((d) => d.isDirectory() && readdirSync(join(FIXTURES, d.name)).includes('config.json'))
  .map((d) => d.name)
  .filter((name) => name !== 'mistral-window'); // tested below: its window is shorter than the inputs

const expected = (name: string) => JSON.parse(readFileSync(join(FIXTURES, name, 'expected.json'), 'utf8')) as Expected;

/** The fixtures' 128 ids, no EOS inside the vocabulary (greedy runs all 8 tokens). */
const ids = idTokenizer(128);

test('the fixtures cover every family and both config layouts', () => {
  expect(checkpoints).toEqual(
    expect.arrayContaining(['llama-v4', 'llama-v5', 'llama-rope-yarn', 'llama-sharded', 'qwen2', 'qwen3', 'mistral']),
  );
});

describe.each(checkpoints)('%s', (name) => {
  const dir = join(FIXTURES, name);
  const want = expected(name);

  test('logits equal transformers within 1e-4 and greedy tokens are the same', async () => {
    const ckpt = await loadCheckpoint(dir);
    const model = new LlamaModel(ckpt.config, ckpt.weights);
    const logits = await logitsOf(model, want.input_ids);
    const flat = want.logits.flat(2);
    expect(Math.max(...flat.map(Math.abs))).toBeGreaterThan(0.5); // not trivially small
    expect(maxAbsDiff(logits, flat)).toBeLessThanOrEqual(1e-4);
    const [greedy] = await sample(model, ids, [{ prompt: want.greedy.prompt, key: [0] }], {
      temperature: 0,
      topK: 0,
      topP: 1,
      maxNewTokens: want.greedy.tokens.length,
      seed: 0,
    });
    expect(greedy!.tokens).toEqual(want.greedy.tokens);
    if (want.long) {
      // Past max_position_embeddings, where dynamic RoPE rescales.
      const long = await logitsOf(model, want.long.input_ids);
      const V = ckpt.config.vocab_size;
      expect(maxAbsDiff(long.subarray(long.length - V), want.long.logits_last)).toBeLessThanOrEqual(1e-4);
    }
  });

  test('a checkpoint we save keeps the family and reloads to identical logits', async () => {
    const ckpt = await loadCheckpoint(dir);
    const out = await mkdtemp(join(tmpdir(), `hf-${name}-`));
    try {
      await saveCheckpoint(out, { config: ckpt.config, weights: ckpt.weights });
      const written = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      const original = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(written.model_type).toBe(original.model_type);
      expect(written.architectures).toEqual(original.architectures);
      const again = await loadCheckpoint(out);
      expect(again.config).toEqual(ckpt.config);
      expect([...again.weights.keys()].sort()).toEqual([...ckpt.weights.keys()].sort());
      const a = await logitsOf(new LlamaModel(ckpt.config, ckpt.weights), want.input_ids);
      const b = await logitsOf(new LlamaModel(again.config, again.weights), want.input_ids);
      expect(b).toEqual(a);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});

// Catches: a Mistral sliding window silently ignored once a sequence is longer than it.
test('a Mistral sliding window shorter than the sequence is refused, naming it; within it the logits match', async () => {
  const dir = join(FIXTURES, 'mistral-window');
  const want = expected('mistral-window');
  const ckpt = await loadCheckpoint(dir);
  expect(ckpt.config.sliding_window).toBe(8);
  const model = new LlamaModel(ckpt.config, ckpt.weights);
  await expect(logitsOf(model, want.input_ids)).rejects.toThrow(
    "sliding_window 8 is shorter than this call's 16 positions: sliding-window attention is not implemented",
  );
  // The first 8 positions see no further back than the window: those logits are transformers'.
  const short = await logitsOf(
    model,
    want.input_ids.map((r) => r.slice(0, 8)),
  );
  const V = ckpt.config.vocab_size;
  want.input_ids.forEach((_, b) => {
    const rows = want.logits[b]!.slice(0, 8).flat();
    expect(maxAbsDiff(short.subarray(b * 8 * V, (b + 1) * 8 * V), rows)).toBeLessThanOrEqual(1e-4);
  });
});
