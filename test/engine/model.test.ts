import { LlamaModel, causalBias, MASKED } from '../../engine/model';
import { logSoftmax, referenceForward } from './reference';
import { maxAbsDiff, randomWeights, rng, tinyGqa, tinyTied } from './helpers';

describe.each([
  ['GQA, untied head', tinyGqa],
  ['MHA, tied head', tinyTied],
])('LlamaModel forward (%s)', (_, config) => {
  const weights = randomWeights(config, 7);
  const model = new LlamaModel(config, weights);
  const r = rng(3);
  const V = config.vocab_size;
  const seqs = [0, 1].map(() => Array.from({ length: 11 }, () => Math.floor(r() * V)));

  test('matches the float64 reference forward within 1e-4', async () => {
    const { logits } = await model.forward({
      tokens: seqs,
      positions: seqs.map((s) => s.map((_, k) => k)),
      attnBias: causalBias([11, 11], 11),
    });
    seqs.forEach((s, b) => {
      const ref = referenceForward(config, weights, s).flatMap((row) => Array.from(row));
      const got = logits.subarray(b * 11 * V, (b + 1) * 11 * V);
      expect(Math.max(...ref.map(Math.abs))).toBeGreaterThan(0.5); // logits are not trivially tiny
      expect(maxAbsDiff(got, ref)).toBeLessThanOrEqual(1e-4);
    });
  });

  test('KV-cache decode equals the full forward', async () => {
    const full = await model.forward({
      tokens: seqs,
      positions: seqs.map((s) => s.map((_, k) => k)),
      attnBias: causalBias([11, 11], 11),
    });
    const pre = await model.forward({
      tokens: seqs.map((s) => s.slice(0, 8)),
      positions: seqs.map(() => [0, 1, 2, 3, 4, 5, 6, 7]),
      attnBias: causalBias([8, 8], 8),
    });
    let cache = pre.cache;
    for (let t = 8; t < 11; t++) {
      const step = await model.forward({
        tokens: seqs.map((s) => [s[t]!]),
        positions: seqs.map(() => [t]),
        attnBias: new Float32Array(2 * (t + 1)),
        past: cache,
      });
      cache = step.cache;
      expect(cache.length).toBe(t + 1);
      seqs.forEach((_, b) => {
        const want = full.logits.subarray((b * 11 + t) * V, (b * 11 + t + 1) * V);
        expect(maxAbsDiff(step.logits.subarray(b * V, (b + 1) * V), want)).toBeLessThanOrEqual(1e-4);
      });
    }
  });
});

describe('log-prob graphs', () => {
  const config = tinyGqa;
  const weights = randomWeights(config, 11);
  const model = new LlamaModel(config, weights);
  const r = rng(5);
  const tok = (n: number) => Array.from({ length: n }, () => Math.floor(r() * config.vocab_size));

  test('tokenLogps on ragged rows equals the reference log-softmax', async () => {
    const seqs = [
      { tokens: tok(9), start: 3 },
      { tokens: tok(5), start: 1 },
    ];
    const got = await model.tokenLogps(seqs);
    seqs.forEach((s, k) => {
      const ref = referenceForward(config, weights, s.tokens).map(logSoftmax);
      const want = s.tokens.slice(s.start).map((t, j) => ref[s.start + j - 1]![t]!);
      expect(got[k]).toHaveLength(s.tokens.length - s.start);
      expect(maxAbsDiff(got[k]!, want)).toBeLessThanOrEqual(1e-4);
    });
  });

  // The families' projections (Qwen2 biases, Qwen3 q/k norms with a wider head) go through the tree graph too.
  test.each([
    ['llama', model],
    [
      'qwen2',
      new LlamaModel({ ...config, model_type: 'qwen2' }, randomWeights({ ...config, model_type: 'qwen2' }, 11)),
    ],
    [
      'qwen3, head_dim 16',
      new LlamaModel(
        { ...config, model_type: 'qwen3', head_dim: 16 },
        randomWeights({ ...config, model_type: 'qwen3', head_dim: 16 }, 11),
      ),
    ],
  ] as [string, LlamaModel][])(
    'tree-masked checkpoint scoring equals one forward per prefix (%s)',
    async (_, model) => {
      const items = [
        { context: tok(14), checkpoints: [3, 7, 14, 10], target: tok(5) },
        { context: tok(6), checkpoints: [1, 6], target: tok(1) },
      ];
      const got = await model.scoreCheckpoints(items);
      for (const [k, item] of items.entries()) {
        const separate = await model.tokenLogps(
          item.checkpoints.map((c) => ({ tokens: [...item.context.slice(0, c), ...item.target], start: c })),
        );
        const want = separate.map((lp) => lp.reduce((a, b) => a + b, 0) / lp.length);
        expect(got[k]).toHaveLength(item.checkpoints.length);
        expect(maxAbsDiff(got[k]!, want)).toBeLessThanOrEqual(1e-4);
      }
      expect(new Set(got[0]!.map((x) => x.toFixed(4))).size).toBeGreaterThan(1); // prefixes actually matter
    },
  );

  test('rejects checkpoints outside the context', async () => {
    await expect(model.scoreCheckpoints([{ context: [1, 2], checkpoints: [3], target: [1] }])).rejects.toThrow(
      /checkpoint 3/,
    );
    expect(MASKED).toBeLessThan(-1e8);
  });
});

describe('weights baked into inference graphs', () => {
  const config = tinyGqa;
  const tokens = [[3, 1, 4, 1, 5, 9, 2, 6]];
  const input = { tokens, positions: [tokens[0]!.map((_, k) => k)], attnBias: causalBias([8], 8) };

  test('setWeights takes effect (no stale baked session) and matches the weights-as-inputs path', async () => {
    const a = randomWeights(config, 1);
    const b = randomWeights(config, 2);
    const model = new LlamaModel(config, a);
    const before = (await model.forward(input)).logits;
    model.setWeights(b);
    const after = (await model.forward(input)).logits;
    const unbaked = new LlamaModel(config, b, { bakeLimitBytes: 0 });
    const reference = (await unbaked.forward(input)).logits;
    expect(maxAbsDiff(before, after)).toBeGreaterThan(0.1);
    expect(maxAbsDiff(after, reference)).toBeLessThanOrEqual(1e-5);
    expect(
      maxAbsDiff(
        await model.tokenLogps([{ tokens: tokens[0]!, start: 1 }]).then((x) => x[0]!),
        await unbaked.tokenLogps([{ tokens: tokens[0]!, start: 1 }]).then((x) => x[0]!),
      ),
    ).toBeLessThanOrEqual(1e-5);
  });
});
