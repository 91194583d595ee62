/**
 * The engine as a cold-start teacher (activities/sft.ts engineTeacher): a sample that reaches `<pad>`,
 * `<bos>` or `<eos>` ends there, so the literal text of a special token never lands in SFT traces (a
 * byte-level model decodes them as text). A random tiny model writes such tokens often enough to show it.
 */
import { engineTeacher } from '../../activities/sft';
import { promptTokens } from '../../activities/engine';
import { modelPresets } from '../../engine/config';
import { LlamaModel, initWeights } from '../../engine/model';
import { sample } from '../../engine/sampler';
import { ByteTokenizer } from '../../engine/tokenizer';

test('teacher text ends before the first <pad>/<bos>/<eos> the model samples, with the log-probs of the kept tokens', async () => {
  const tok = new ByteTokenizer();
  const model = new LlamaModel(modelPresets.tiny, initWeights(modelPresets.tiny, 3));
  const teacher = engineTeacher(model, tok, 1);
  const options = { stop: [], maxNewTokens: 48, temperature: 1, topP: 1, topK: 0 };
  const ending = [tok.padId, tok.bosId, tok.eosId];
  let rawWithSpecial = 0;
  for (let k = 0; k < 24; k++) {
    const got = await teacher.generate('Describe a red fox.', { ...options, key: [k] });
    expect(got.text).not.toMatch(/<pad>|<bos>|<eos>/);
    // The same draw, straight from the sampler: did the model write a special token there?
    const [raw] = await sample(model, tok, [{ prompt: promptTokens(tok, 'Describe a red fox.'), key: [k] }], {
      ...options,
      seed: 1,
    });
    const end = raw!.tokens.findIndex((t) => ending.includes(t));
    if (end >= 0 && raw!.tokens[end] !== tok.eosId) rawWithSpecial++;
    const kept = end < 0 ? raw!.tokens : raw!.tokens.slice(0, end);
    expect(got.text).toBe(tok.decode(kept));
    expect(got.logps).toEqual(raw!.logps.slice(0, kept.length));
  }
  expect(rawWithSpecial).toBeGreaterThan(0); // the case this test is about did occur
});
