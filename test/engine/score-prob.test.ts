/**
 * The mean per-token probability of the reference (the `likelihood` reward kind's score) equals the
 * mean of exp(token log p) computed independently, by the float64 reference forward, per checkpoint.
 */
import { scoreResponses } from '../../activities/engine';
import { LlamaModel } from '../../engine/model';
import { ByteTokenizer, contextTokens } from '../../engine/tokenizer';
import { modelPresets } from '../../engine/config';
import { logSoftmax, referenceForward } from './reference';
import { randomWeights, rng, tinyGqa } from './helpers';

const relErr = (got: number, want: number) => Math.abs(got - want) / Math.abs(want);

describe('checkpointScores', () => {
  const config = tinyGqa;
  const weights = randomWeights(config, 11, 1);
  const model = new LlamaModel(config, weights);
  const r = rng(9);
  const tok = (n: number) => Array.from({ length: n }, () => Math.floor(r() * config.vocab_size));

  test('meanProb is the float64 mean of exp(log p) of the target tokens after each checkpoint', async () => {
    const items = [
      { context: tok(12), checkpoints: [2, 12, 7], target: tok(4) },
      { context: tok(5), checkpoints: [5], target: tok(1) },
    ];
    const got = await model.checkpointScores(items);
    const plain = await model.scoreCheckpoints(items);
    items.forEach((item, k) => {
      expect(got[k]!.map((c) => c.meanLogp)).toEqual(plain[k]); // scoreCheckpoints is its meanLogp
      item.checkpoints.forEach((c, j) => {
        const seq = [...item.context.slice(0, c), ...item.target];
        const ref = referenceForward(config, weights, seq).map(logSoftmax);
        const logps = item.target.map((t, i) => ref[c - 1 + i]![t]!);
        const want = logps.reduce((a, lp) => a + Math.exp(lp), 0) / logps.length;
        const meanLogp = logps.reduce((a, b) => a + b, 0) / logps.length;
        expect(relErr(got[k]![j]!.meanProb, want)).toBeLessThanOrEqual(2e-4);
        expect(Math.abs(got[k]![j]!.meanLogp - meanLogp)).toBeLessThanOrEqual(1e-4);
        // The mean of probabilities, not exp of the mean log-prob (Jensen: strictly larger when they differ).
        if (logps.length > 1) expect(got[k]![j]!.meanProb).toBeGreaterThan(Math.exp(got[k]![j]!.meanLogp) * 1.001);
      });
    });
    expect(new Set(got[0]!.map((c) => c.meanProb.toPrecision(4))).size).toBe(3); // prefixes actually matter
  });
});

test("scoreResponses' probFull is the mean probability of the reference after prompt + full response", async () => {
  const config = modelPresets.tiny;
  const weights = randomWeights(config, 3, 1);
  const model = new LlamaModel(config, weights);
  const byte = new ByteTokenizer();
  const item = { prompt: 'Q: colour?', reference: 'red.', response: '<think>Hmm.\n\nBut red.</think>red' };
  const [scored] = await scoreResponses(model, byte, [item]);
  const context = contextTokens(byte, item.prompt, item.response);
  const target = byte.encode(item.reference);
  const ref = referenceForward(config, weights, [...context, ...target]).map(logSoftmax);
  const logps = target.map((t, i) => ref[context.length - 1 + i]![t]!);
  expect(relErr(scored!.probFull!, logps.reduce((a, lp) => a + Math.exp(lp), 0) / logps.length)).toBeLessThanOrEqual(
    2e-4,
  );
  expect(Math.abs(scored!.logpFull - logps.reduce((a, b) => a + b, 0) / logps.length)).toBeLessThanOrEqual(1e-4);
});
