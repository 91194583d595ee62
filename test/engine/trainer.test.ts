import { llamaConfigSchema, type LlamaConfig } from '../../engine/config';
import { LlamaModel, parameterShapes, type Weights } from '../../engine/model';
import { Session, type Feeds } from '../../engine/ort';
import { Trainer, adamwDefaults, batchFeeds, buildGradGraph, grpoFeeds, resolveLoss, sftWeights } from '../../engine/trainer';
import { policyLoss } from '../../opera/grpo';
import { randomWeights, rng, tinyGqa } from './helpers';

const clone = (w: Weights): Weights => new Map([...w].map(([k, v]) => [k, Float32Array.from(v)]));
const randTokens = (r: () => number, n: number, V: number) => Array.from({ length: n }, () => Math.floor(r() * V));

describe('GRPO step loss equals opera/grpo.ts policyLoss', () => {
  const config = tinyGqa;
  const r = rng(21);
  const rows = [
    { tokens: randTokens(r, 12, config.vocab_size), responseStart: 4, advantage: 1.3 },
    { tokens: randTokens(r, 7, config.vocab_size), responseStart: 2, advantage: -0.8 },
    { tokens: randTokens(r, 10, config.vocab_size), responseStart: 9, advantage: -2.1 },
  ];

  test.each([
    ['token-mean', {}],
    ['seq-mean-token-mean', { clipLow: 0.1, clipHigh: 0.28, dualClip: 2.5, klCoef: 0.05 }],
  ] as const)('%s', async (aggregation, extra) => {
    const weights = randomWeights(config, 4);
    const model = new LlamaModel(config, clone(weights));
    const logp = await model.tokenLogps(rows.map((x) => ({ tokens: x.tokens, start: x.responseStart })));
    // Old/ref log-probs scattered around the current ones so that both clip branches and the dual clip fire.
    const oldLogp = logp.map((lp) => lp.map((v) => v + (r() - 0.5) * 1.2));
    const refLogp = logp.map((lp) => lp.map((v) => v + (r() - 0.5) * 2));
    const options = { aggregation, ...extra };
    const want = policyLoss({ logp, oldLogp, refLogp, advantages: rows.map((x) => x.advantage), mask: logp.map((lp) => lp.map(() => 1)) }, options);
    const got = await new Trainer(model).grpoStep(rows.map((x, k) => ({ ...x, oldLogp: oldLogp[k]!, refLogp: refLogp[k]! })), 1e-3, options);
    expect(want.clipFraction).toBeGreaterThan(0);
    expect(Math.abs(got.loss - want.loss)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(got.pgLoss - want.pgLoss)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(got.klLoss - want.klLoss)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(got.clipFraction - want.clipFraction)).toBeLessThanOrEqual(1e-5);
    expect(got.gradNorm).toBeGreaterThan(0);
    expect(model.weights.get('model.norm.weight')).not.toEqual(weights.get('model.norm.weight')); // the step updated the model
  });

  // Catches: KL direction flipped in the training graph (k = logp − refLogp). One response token per
  // step, so a flipped sign cannot cancel out as it does across the ±ln2 pair of a longer sequence.
  test('KL direction: one response token with refLogp − logp = ±ln2', async () => {
    const weights = randomWeights(config, 4);
    const row = { tokens: [7, 19], responseStart: 1, advantage: 0 }; // predicts token 19 from token 7
    const [[lp]] = (await new LlamaModel(config, clone(weights)).tokenLogps([{ tokens: row.tokens, start: 1 }])) as [[number]];
    // A fresh model each time: a step updates the weights, and both cases must see the same logp.
    const step = async (refLogp: number) =>
      new Trainer(new LlamaModel(config, clone(weights))).grpoStep([{ ...row, oldLogp: [lp], refLogp: [refLogp] }], 1e-3);
    // k = ln2: kl = 2 − ln2 − 1 ≈ 0.30685 (flipped: 0.5 + ln2 − 1 ≈ 0.19315).
    const up = await step(lp + Math.LN2);
    expect(Math.abs(up.klLoss - (1 - Math.LN2))).toBeLessThan(1e-5);
    expect(Math.abs(up.pgLoss)).toBeLessThan(1e-6); // A = 0
    expect(Math.abs(up.loss - 0.001 * (1 - Math.LN2))).toBeLessThan(1e-7);
    // k = −ln2: kl = 0.5 + ln2 − 1 ≈ 0.19315 (flipped: 0.30685).
    const down = await step(lp - Math.LN2);
    expect(Math.abs(down.klLoss - (Math.LN2 - 0.5))).toBeLessThan(1e-5);
  });

  test('rejects log-prob arrays that do not match the response', async () => {
    const model = new LlamaModel(config, randomWeights(config, 4));
    await expect(new Trainer(model).grpoStep([{ tokens: [1, 2, 3], responseStart: 1, advantage: 1, oldLogp: [0], refLogp: [0, 0] }], 1e-3)).rejects.toThrow(/oldLogp\/refLogp need 2 values/);
  });
});

describe('SFT step', () => {
  test('first loss is the masked mean NLL, and the loss falls on a tiny problem', async () => {
    const config = tinyGqa;
    const model = new LlamaModel(config, randomWeights(config, 8, 0.05));
    const batch = [
      { tokens: [5, 6, 7, 8, 9, 10, 11, 12], lossMask: [0, 0, 0, 1, 1, 1, 1, 1] },
      { tokens: [20, 21, 22, 23], lossMask: [0, 1, 1, 1] },
    ];
    const lp = await model.tokenLogps([{ tokens: batch[0]!.tokens, start: 3 }, { tokens: batch[1]!.tokens, start: 1 }]);
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
function adamwReference(w: Weights, grads: Map<string, Float32Array>, m: Map<string, Float64Array>, v: Map<string, Float64Array>, step: number, lr: number) {
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
  const gradSession = await Session.get(buildGradGraph(config, 1, 'sft').toBytes());
  let ref = clone(model.weights);
  const m = new Map([...ref].map(([k, x]) => [k, new Float64Array(x.length)]));
  const v = new Map([...ref].map(([k, x]) => [k, new Float64Array(x.length)]));
  for (let step = 1; step <= 2; step++) {
    const { feeds, B, T } = batchFeeds(config, batch.map((b) => b.tokens));
    feeds.weight = { data: sftWeights(batch, B, T).weight, dims: [B, T] };
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
  const small: LlamaConfig = llamaConfigSchema.parse({ hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 20 });
  test.each([
    ['sft, untied', small, 'sft'],
    ['sft, tied, MHA', { ...small, tie_word_embeddings: true, num_key_value_heads: 4 }, 'sft'],
    ['grpo', small, 'grpo'],
  ] as const)('%s', async (_, config, kind) => {
    const r = rng(13);
    const rows = [randTokens(r, 7, config.vocab_size), randTokens(r, 5, config.vocab_size)];
    const session = await Session.get(buildGradGraph(config, 2, kind, resolveLoss(), 'float64').toBytes());
    let base: Feeds;
    if (kind === 'sft') {
      base = batchFeeds(config, rows, 'float64').feeds;
      base.weight = { data: sftWeights(rows.map((t) => ({ tokens: t, lossMask: t.map(() => 1) })), 2, 6, 'float64').weight, dims: [2, 6] };
    } else {
      const batch = rows.map((t, k) => ({ tokens: t, responseStart: 2, advantage: k ? -0.7 : 1.1, oldLogp: t.slice(2).map(() => -3 + r()), refLogp: t.slice(2).map(() => -3 + r()) }));
      base = grpoFeeds(config, batch, 'token-mean', 'float64').feeds;
    }
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
  expect(() => new Trainer(model, {}, { step: 3, m, v: model.weights })).toThrow('optimizer state: m for model.norm.weight is missing');
});
