/**
 * LoRA as PEFT computes it: a PEFT-made adapter (test/fixtures/hf/llama-lora, with PEFT's own logits)
 * loads onto its base and gives PEFT's logits and greedy tokens; merging it gives the same model; training
 * moves the adapter only (base weights bit-identical, moments for the adapter only); a saved LoRA
 * checkpoint is a PEFT adapter directory with PEFT's tensor names and reloads exactly.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachAdapter, loadCheckpoint, saveCheckpoint, type Checkpoint } from '../../engine/checkpoint';
import { llamaConfigSchema, type LlamaConfig } from '../../engine/config';
import { buildGradGraph, sftBatch, sftObjective, batchFeeds, Trainer } from '../../engine/trainer';
import { loadPeftAdapter, mergeLora, loraSchema } from '../../engine/lora';
import { LlamaModel, parameterShapes } from '../../engine/model';
import { Session, type Feeds } from '../../engine/ort';
import { decodeSafetensors } from '../../engine/safetensors';
import { sample } from '../../engine/sampler';
import { idTokenizer, logitsOf, maxAbsDiff, randomWeights, rng } from './helpers';

const HF = join(__dirname, '..', 'fixtures', 'hf');
const expected = JSON.parse(readFileSync(join(HF, 'llama-lora', 'expected.json'), 'utf8')) as {
  input_ids: number[][];
  logits: number[][][];
  greedy: { prompt: number[]; tokens: number[] };
};
const ids = idTokenizer(128);

async function peftModel(): Promise<Checkpoint> {
  const base = await loadCheckpoint(join(HF, 'llama-v5'));
  return attachAdapter(base, await loadPeftAdapter(join(HF, 'llama-lora')), 'llama-lora');
}

test("a PEFT adapter on its base gives PEFT's logits and greedy tokens, and merged gives the same", async () => {
  const ckpt = await peftModel();
  expect(ckpt.config.lora).toEqual({
    rank: 4,
    alpha: 8,
    dropout: 0,
    targetModules: expect.arrayContaining(['q_proj', 'down_proj']),
  });
  const model = new LlamaModel(ckpt.config, ckpt.weights);
  const logits = await logitsOf(model, expected.input_ids);
  expect(maxAbsDiff(logits, expected.logits.flat(2))).toBeLessThanOrEqual(1e-4);
  // The adapter matters: the base alone is far from PEFT's logits.
  const base = await loadCheckpoint(join(HF, 'llama-v5'));
  expect(
    maxAbsDiff(await logitsOf(new LlamaModel(base.config, base.weights), expected.input_ids), expected.logits.flat(2)),
  ).toBeGreaterThan(0.5);
  const [greedy] = await sample(model, ids, [{ prompt: expected.greedy.prompt, key: [0] }], {
    temperature: 0,
    topK: 0,
    topP: 1,
    maxNewTokens: expected.greedy.tokens.length,
    seed: 0,
  });
  expect(greedy!.tokens).toEqual(expected.greedy.tokens);

  const { lora, ...plain } = ckpt.config;
  const merged = mergeLora(base.weights, parameterShapes(plain), ckpt.weights, lora!);
  expect(maxAbsDiff(await logitsOf(new LlamaModel(plain, merged), expected.input_ids), logits)).toBeLessThanOrEqual(
    1e-4,
  );
});

test('an adapter that does not fit the model is refused, naming the tensors', async () => {
  const base = await loadCheckpoint(join(HF, 'qwen3'));
  const adapter = await loadPeftAdapter(join(HF, 'llama-lora'));
  expect(() => attachAdapter(base, adapter, 'llama-lora')).toThrow(
    /llama-lora does not fit the model:\n .*model\.layers\.0\.self_attn\.q_proj\.lora_B\.weight: expected \[128, 4\] got \[64, 4\]/,
  );
});

const small: LlamaConfig = llamaConfigSchema.parse({
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 20,
  lora: loraSchema.parse({ rank: 2, alpha: 4, targetModules: ['q_proj', 'v_proj', 'down_proj'] }),
});

test('training moves the adapter only: base weights bit-identical, moments for the adapter alone', async () => {
  const model = new LlamaModel(small, randomWeights(small, 3));
  const before = new Map(model.weights);
  const trainer = new Trainer(model, {});
  const r = rng(4);
  const rows = [0, 1].map(() => Array.from({ length: 6 }, () => Math.floor(r() * 20)));
  await trainer.sftStep(
    rows.map((t) => ({ tokens: t, lossMask: t.map(() => 1) })),
    1e-2,
  );
  const adapterNames = [...model.weights.keys()].filter((n) => n.includes('.lora_'));
  expect(adapterNames).toHaveLength(2 * 2 * 3);
  for (const [name, w] of model.weights) {
    if (name.includes('.lora_')) expect(w).not.toEqual(before.get(name));
    else expect(w).toBe(before.get(name)); // not even copied
  }
  expect([...trainer.state().m.keys()].sort()).toEqual(adapterNames.sort());
});

test('gradients of the adapter match float64 finite differences; the base gets none', async () => {
  const session = await Session.get(buildGradGraph(small, 2, sftObjective, 'float64').toBytes());
  const r = rng(13);
  const rows = [0, 1].map((k) => Array.from({ length: 7 - 2 * k }, () => Math.floor(r() * 20)));
  const base: Feeds = {
    ...batchFeeds(small, rows, 'float64').feeds,
    ...sftBatch(
      rows.map((t) => ({ tokens: t, lossMask: t.map(() => 1) })),
      'float64',
    ).feeds,
  };
  const params = new Map([...randomWeights(small, 17, 0.3)].map(([k, x]) => [k, Float64Array.from(x)]));
  const feeds = (): Feeds => {
    const f: Feeds = { ...base };
    for (const [name, shape] of parameterShapes(small)) f[name] = { data: params.get(name)!, dims: shape };
    return f;
  };
  const out = await session.run(feeds());
  expect(Object.keys(out).filter((k) => k.startsWith('grad:') && !k.includes('.lora_'))).toEqual([]);
  for (const [name, p] of params) {
    if (!name.includes('.lora_')) continue;
    const grad = out[`grad:${name}`]!.data as Float64Array;
    const k = Math.floor(r() * p.length);
    const orig = p[k]!;
    p[k] = orig + 1e-5;
    const lp = (await session.run(feeds())).loss!.data[0] as number;
    p[k] = orig - 1e-5;
    const lm = (await session.run(feeds())).loss!.data[0] as number;
    p[k] = orig;
    const numeric = (lp - lm) / 2e-5;
    expect(Math.abs(grad[k]! - numeric)).toBeLessThanOrEqual(1e-7 + 1e-5 * Math.abs(numeric));
  }
});

test("a saved LoRA checkpoint is a PEFT adapter directory with PEFT's names, and reloads exactly", async () => {
  const ckpt = await peftModel();
  const dir = await mkdtemp(join(tmpdir(), 'lora-'));
  try {
    const model = new LlamaModel(ckpt.config, ckpt.weights);
    const trainer = new Trainer(model, {});
    await trainer.sftStep([{ tokens: expected.input_ids[0]!, lossMask: expected.input_ids[0]!.map(() => 1) }], 1e-3);
    await saveCheckpoint(dir, { config: ckpt.config, weights: model.weights, optimizer: trainer.state() });
    const adapterNames = [...decodeSafetensors(await readFile(join(dir, 'adapter_model.safetensors'))).tensors.keys()];
    const peftNames = [
      ...decodeSafetensors(await readFile(join(HF, 'llama-lora', 'adapter_model.safetensors'))).tensors.keys(),
    ];
    expect(adapterNames.sort()).toEqual(peftNames.sort());
    const baseNames = [...decodeSafetensors(await readFile(join(dir, 'model.safetensors'))).tensors.keys()];
    expect(baseNames.some((n) => n.includes('lora'))).toBe(false);
    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, bias: 'none', use_rslora: false });
    expect(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'))).not.toHaveProperty('lora');
    const again = await loadCheckpoint(dir, ckpt.config);
    expect(again.config).toEqual(ckpt.config);
    expect(again.weights).toEqual(model.weights);
    expect(again.optimizer!.step).toBe(1);
    expect([...again.optimizer!.m.keys()].every((n) => n.includes('.lora_'))).toBe(true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
