import { llamaConfigSchema, type LlamaConfig } from '../../engine/config';
import { LlamaModel, parameterShapes, type Weights } from '../../engine/model';
import { Session, type Feeds } from '../../engine/ort';
import { Trainer, adamwDefaults, batchFeeds, buildGradGraph, sftBatch, sftObjective } from '../../engine/trainer';
import { randomWeights, rng, tinyGqa } from './helpers';

const clone = (w: Weights): Weights => new Map([...w].map(([k, v]) => [k, Float32Array.from(v)]));
const randTokens = (r: () => number, n: number, V: number) => Array.from({ length: n }, () => Math.floor(r() * V));

describe('SFT step', () => {
  test('first loss is the masked mean NLL, and the loss falls on a tiny problem', async () => {
    const config = tinyGqa;
    const model = new LlamaModel(config, randomWeights(config, 8, 0.05));
    const batch = [
      { tokens: [5, 6, 7, 8, 9, 10, 11, 12], lossMask: [0, 0, 0, 1, 1, 1, 1, 1] },
      { tokens: [20, 21, 22, 23], lossMask: [0, 1, 1, 1] },
    ];
    const lp = await model.tokenLogps([
      { tokens: batch[0]!.tokens, start: 3 },
      { tokens: batch[1]!.tokens, start: 1 },
    ]);
    const nll = -lp.flat().reduce((a, b) => a + b, 0) / 8;
    const trainer = new Trainer(model);
    const first = await trainer.sftStep(batch, 3e-3);
    expect(first.tokens).toBe(8);
    expect(Math.abs(first.loss - nll)).toBeLessThan(1e-4);
    let last = first.loss;
    for (let k = 0; k < 25; k++) last = (await trainer.sftStep(batch, 3e-3)).loss;
    expect(last).toBeLessThan(first.loss * 0.5);
    expect(trainer.state().step).toBe(26);
  });
});

/** Plain-TS AdamW (torch semantics + clip_grad_norm_), the reference for the in-graph optimizer. */
function adamwReference(
  w: Weights,
  grads: Map<string, Float32Array>,
  m: Map<string, Float64Array>,
  v: Map<string, Float64Array>,
  step: number,
  lr: number,
) {
  const o = { ...adamwDefaults, weightDecay: 0.1 };
  let sq = 0;
  for (const gr of grads.values()) for (const x of gr) sq += x * x;
  const norm = Math.sqrt(sq);
  const scale = Math.min(1, o.maxGradNorm / (norm + 1e-6));
  const out: Weights = new Map();
  for (const [name, p] of w) {
    const gr = grads.get(name)!;
    const mm = m.get(name)!;
    const vv = v.get(name)!;
    const decay = p.length !== parameterShapes(tinyGqa).get(name)![0] ? 1 - lr * o.weightDecay : 1;
    const next = new Float32Array(p.length);
    for (let k = 0; k < p.length; k++) {
      const gk = gr[k]! * scale;
      mm[k] = o.beta1 * mm[k]! + (1 - o.beta1) * gk;
      vv[k] = o.beta2 * vv[k]! + (1 - o.beta2) * gk * gk;
      const mhat = mm[k]! / (1 - o.beta1 ** step);
      const denom = Math.sqrt(vv[k]!) / Math.sqrt(1 - o.beta2 ** step) + o.eps;
      next[k] = p[k]! * decay - lr * (mhat / denom);
    }
    out.set(name, next);
  }
  return { weights: out, norm };
}

test('in-graph AdamW matches a plain-TS AdamW over two steps', async () => {
  const config = tinyGqa;
  const r = rng(2);
  const batch = [{ tokens: randTokens(r, 9, config.vocab_size), lossMask: [0, 1, 1, 1, 1, 1, 1, 1, 1] }];
  const model = new LlamaModel(config, randomWeights(config, 3));
  const trainer = new Trainer(model, { weightDecay: 0.1 }); // large enough that skipping decay would show
  const gradSession = await Session.get(buildGradGraph(config, 1, sftObjective).toBytes());
  let ref = clone(model.weights);
  const m = new Map([...ref].map(([k, x]) => [k, new Float64Array(x.length)]));
  const v = new Map([...ref].map(([k, x]) => [k, new Float64Array(x.length)]));
  for (let step = 1; step <= 2; step++) {
    const feeds: Feeds = {
      ...batchFeeds(
        config,
        batch.map((b) => b.tokens),
      ).feeds,
      ...sftBatch(batch).feeds,
    };
    for (const [name, shape] of parameterShapes(config)) feeds[name] = { data: ref.get(name)!, dims: shape };
    const out = await gradSession.run(feeds);
    const grads = new Map([...ref.keys()].map((k) => [k, out[`grad:${k}`]!.data as Float32Array]));
    const lr = step === 1 ? 1e-2 : 5e-3;
    const want = adamwReference(ref, grads, m, v, step, lr);
    const got = await trainer.sftStep(batch, lr);
    expect(want.norm).toBeGreaterThan(adamwDefaults.maxGradNorm); // so clipping is exercised
    expect(Math.abs(got.gradNorm - want.norm)).toBeLessThan(1e-4 * want.norm);
    let maxDiff = 0;
    let maxMove = 0;
    for (const [name, w] of want.weights) {
      const g = model.weights.get(name)!;
      for (let k = 0; k < w.length; k++) {
        maxDiff = Math.max(maxDiff, Math.abs(g[k]! - w[k]!));
        maxMove = Math.max(maxMove, Math.abs(w[k]! - ref.get(name)![k]!));
      }
    }
    expect(maxMove).toBeGreaterThan(1e-3);
    // Float32 grads from two different graphs differ in the last bits; Adam's m/√v amplifies that only
    // for near-zero gradients, so the bound is 1e-3·lr while a missing term (e.g. decay: lr·0.1·|p|) is far larger.
    expect(maxDiff).toBeLessThan(1e-3 * lr);
    ref = want.weights;
  }
  expect(trainer.state().step).toBe(2);
});

describe('whole-model gradient check (float64 finite differences)', () => {
  const small: LlamaConfig = llamaConfigSchema.parse({
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 20,
  });
  test.each([
    ['sft, untied', small],
    ['sft, tied, MHA', { ...small, tie_word_embeddings: true, num_key_value_heads: 4 }],
    // The families' extra parameters train too: q/k/v biases, per-head q/k norms with a wider head_dim.
    ['sft, qwen2', { ...small, model_type: 'qwen2' }],
    ['sft, qwen3, head_dim 8', { ...small, model_type: 'qwen3', head_dim: 8 }],
  ] as [string, LlamaConfig][])('%s', async (_, config) => {
    const r = rng(13);
    const rows = [randTokens(r, 7, config.vocab_size), randTokens(r, 5, config.vocab_size)];
    const session = await Session.get(buildGradGraph(config, 2, sftObjective, 'float64').toBytes());
    const base: Feeds = {
      ...batchFeeds(config, rows, 'float64').feeds,
      ...sftBatch(
        rows.map((t) => ({ tokens: t, lossMask: t.map(() => 1) })),
        'float64',
      ).feeds,
    };
    const w32 = randomWeights(config, 17, 0.3);
    const params = new Map([...w32].map(([k, x]) => [k, Float64Array.from(x)]));
    const feeds = (): Feeds => {
      const f: Feeds = { ...base };
      for (const [name, shape] of parameterShapes(config)) f[name] = { data: params.get(name)!, dims: shape };
      return f;
    };
    const out = await session.run(feeds());
    const loss = async () => (await session.run(feeds())).loss!.data[0] as number;
    let checked = 0;
    for (const [name, p] of params) {
      const grad = out[`grad:${name}`]!.data as Float64Array;
      for (let c = 0; c < 2; c++) {
        const k = Math.floor(r() * p.length);
        const h = 1e-5;
        const orig = p[k]!;
        p[k] = orig + h;
        const lp = await loss();
        p[k] = orig - h;
        const lm = await loss();
        p[k] = orig;
        const numeric = (lp - lm) / (2 * h);
        expect(Math.abs(grad[k]! - numeric)).toBeLessThanOrEqual(1e-7 + 1e-5 * Math.abs(numeric));
        checked++;
      }
    }
    expect(checked).toBe(2 * params.size);
  });
});

test('optimizer state is validated against the model', () => {
  const model = new LlamaModel(tinyGqa, randomWeights(tinyGqa, 1));
  const m = new Map(model.weights);
  m.delete('model.norm.weight');
  expect(() => new Trainer(model, {}, { step: 3, m, v: model.weights })).toThrow(
    'optimizer state: m for model.norm.weight is missing',
  );
});
