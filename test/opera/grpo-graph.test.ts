/**
 * The GRPO objective the engine trains (opera/grpo-graph.ts) against the plain-array specification
 * (opera/grpo.ts policyLoss), and its gradients against float64 finite differences through the whole model.
 */
import { llamaConfigSchema, type LlamaConfig } from '../../engine/config';
import { LlamaModel, parameterShapes, type Weights } from '../../engine/model';
import { Session, type Feeds } from '../../engine/ort';
import { Trainer, batchFeeds, buildGradGraph } from '../../engine/trainer';
import { policyLoss, type PolicyLossOptions } from '../../opera/grpo';
import { grpoBatch, grpoObjective, type GrpoSequence } from '../../opera/grpo-graph';
import { randomWeights, rng, tinyGqa } from '../engine/helpers';

const clone = (w: Weights): Weights => new Map([...w].map(([k, v]) => [k, Float32Array.from(v)]));
const randTokens = (r: () => number, n: number, V: number) => Array.from({ length: n }, () => Math.floor(r() * V));

/** One GRPO step at lr 1e-3; the loss metrics by name. */
async function grpoStep(trainer: Trainer, batch: GrpoSequence[], options: PolicyLossOptions = {}) {
  const out = await trainer.step(grpoObjective(options), grpoBatch(batch, options.aggregation), 1e-3);
  return {
    loss: out.loss,
    gradNorm: out.gradNorm,
    pgLoss: out.metrics.pgLoss!,
    klLoss: out.metrics.klLoss!,
    clipFraction: out.metrics.clipFraction!,
  };
}

describe('the GRPO training step (grpoObjective) computes opera/grpo.ts policyLoss', () => {
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
    const want = policyLoss(
      { logp, oldLogp, refLogp, advantages: rows.map((x) => x.advantage), mask: logp.map((lp) => lp.map(() => 1)) },
      options,
    );
    const got = await grpoStep(
      new Trainer(model),
      rows.map((x, k) => ({ ...x, oldLogp: oldLogp[k]!, refLogp: refLogp[k]! })),
      options,
    );
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
    const [[lp]] = (await new LlamaModel(config, clone(weights)).tokenLogps([{ tokens: row.tokens, start: 1 }])) as [
      [number],
    ];
    // A fresh model each time: a step updates the weights, and both cases must see the same logp.
    const step = async (refLogp: number) =>
      grpoStep(new Trainer(new LlamaModel(config, clone(weights))), [{ ...row, oldLogp: [lp], refLogp: [refLogp] }]);
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
    await expect(
      grpoStep(new Trainer(model), [
        { tokens: [1, 2, 3], responseStart: 1, advantage: 1, oldLogp: [0], refLogp: [0, 0] },
      ]),
    ).rejects.toThrow(/oldLogp\/refLogp need 2 values/);
  });
});

describe('whole-model gradient check of the GRPO objective (float64 finite differences)', () => {
  const config: LlamaConfig = llamaConfigSchema.parse({
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 20,
  });
  test.each(['token-mean', 'seq-mean-token-mean'] as const)('%s', async (aggregation) => {
    const r = rng(13);
    const rows = [randTokens(r, 7, config.vocab_size), randTokens(r, 5, config.vocab_size)];
    const session = await Session.get(buildGradGraph(config, 2, grpoObjective({ klCoef: 0.05 }), 'float64').toBytes());
    const batch = rows.map((t, k) => ({
      tokens: t,
      responseStart: 2,
      advantage: k ? -0.7 : 1.1,
      oldLogp: t.slice(2).map(() => -3 + r()),
      refLogp: t.slice(2).map(() => -3 + r()),
    }));
    const base: Feeds = {
      ...batchFeeds(config, rows, 'float64').feeds,
      ...grpoBatch(batch, aggregation, 'float64').feeds,
    };
    const params = new Map([...randomWeights(config, 17, 0.3)].map(([k, x]) => [k, Float64Array.from(x)]));
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
