/**
 * The engine's public surface (engine/index.ts) is enough to script against: load an HF checkpoint of
 * any family, run it, sample from it, train a step and save it, with no other engine module imported.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CausalLM, Trainer, causalBias, loadCheckpoint, loadHfTokenizer, sample, saveCheckpoint } from '../../engine';
import { tinyBpeTokenizerJson } from './helpers';

test('load, forward, sample, train and save through engine/index.ts alone', async () => {
  const ckpt = await loadCheckpoint(join(__dirname, '..', 'fixtures', 'hf', 'qwen3'));
  expect(ckpt.config).toMatchObject({ model_type: 'qwen3', head_dim: 32 });
  const model = new CausalLM(ckpt.config, ckpt.weights);
  const tokens = [[5, 9, 17, 33]];
  const { logits } = await model.forward({ tokens, positions: [[0, 1, 2, 3]], attnBias: causalBias([4], 4) });
  expect(logits).toHaveLength(4 * ckpt.config.vocab_size);

  const dir = await mkdtemp(join(tmpdir(), 'surface-'));
  try {
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tinyBpeTokenizerJson()));
    const tok = await loadHfTokenizer(dir);
    const [out] = await sample(
      model,
      { ...tok, eosId: -1, vocabSize: 128, decode: (ids) => ids.join(',') },
      [{ prompt: [5, 9], key: [1] }],
      { temperature: 0, topK: 0, topP: 1, maxNewTokens: 3, seed: 0 },
    );
    expect(out!.tokens).toHaveLength(3);

    const trainer = new Trainer(model, {});
    const step = await trainer.sftStep([{ tokens: [5, 9, 17, 33], lossMask: [0, 1, 1, 1] }], 1e-3);
    expect(Number.isFinite(step.loss)).toBe(true);
    await saveCheckpoint(join(dir, 'out'), { config: ckpt.config, weights: model.weights, optimizer: trainer.state() });
    const again = await loadCheckpoint(join(dir, 'out'), ckpt.config);
    expect(again.weights.get('model.layers.0.self_attn.q_norm.weight')).toEqual(
      model.weights.get('model.layers.0.self_attn.q_norm.weight'),
    );
    expect(again.optimizer?.step).toBe(1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
