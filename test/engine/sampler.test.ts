import { modelPresets } from '../../engine/config';
import { LlamaModel, causalBias, initWeights, type Weights } from '../../engine/model';
import { chooseToken, sample, type SampleOptions, type SampleRequest } from '../../engine/sampler';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteTokenizer, loadHfTokenizer, type Tokenizer } from '../../engine/tokenizer';
import { tinyBpeTokenizerJson } from './helpers';

const config = modelPresets.tiny;
const tok = new ByteTokenizer();

/** Random weights scaled up so the tiny model's distributions are peaked (near-ties would make greedy fragile). */
function peakedWeights(seed: number): Weights {
  const w = initWeights(config, seed);
  for (const [name, d] of w) if (d.length > config.hidden_size) for (let i = 0; i < d.length; i++) d[i]! *= 15;
  return w;
}

const weights = peakedWeights(11);
const model = new LlamaModel(config, weights);
const prompt = (text: string) => [tok.bosId, ...tok.encode(text)];
const opts = (o: Partial<SampleOptions> = {}): SampleOptions => ({
  temperature: 1,
  topK: 0,
  topP: 1,
  maxNewTokens: 12,
  seed: 5,
  ...o,
});

describe('chooseToken', () => {
  // p = [0.2, 0.5, 0.3] over ids [0, 1, 2]; filtered sampling runs in probability order [1, 2, 0].
  const logits = new Float32Array([Math.log(0.2), Math.log(0.5), Math.log(0.3)]);
  const pick = (o: Partial<SampleOptions>, u: number, choosable?: number) =>
    chooseToken(logits, { temperature: 1, topK: 0, topP: 1, ...o }, u, choosable).token;

  it('inverts the CDF of the softmax', () => {
    expect([0, 0.19, 0.21, 0.69, 0.71, 0.999].map((u) => pick({}, u))).toEqual([0, 0, 1, 1, 2, 2]);
  });

  it('never picks ids the tokenizer cannot decode, but reports log p over the full vocabulary', () => {
    expect([0, 0.28, 0.29, 0.999].map((u) => pick({}, u, 2))).toEqual([0, 0, 1, 1]); // {0: 2/7, 1: 5/7}
    expect(chooseToken(logits, { temperature: 1, topK: 0, topP: 1 }, 0.9, 2).logp).toBeCloseTo(Math.log(0.5), 6);
  });

  it('reports log p under the unmodified distribution whatever the filters', () => {
    const r = chooseToken(logits, { temperature: 0.3, topK: 2, topP: 0.9 }, 0.9);
    expect(r.token).toBe(2);
    expect(r.logp).toBeCloseTo(Math.log(0.3), 6);
  });

  it('top-k keeps the k most likely, top-p the smallest set reaching p, then renormalises', () => {
    // top-k 2 → {1: .625, 2: .375}
    expect([0.6, 0.63, 0.99].map((u) => pick({ topK: 2 }, u))).toEqual([1, 2, 2]);
    // top-p 0.6 → 0.5 < 0.6 so id 2 joins; 0.8 ≥ 0.6 so id 0 does not
    expect([0.6, 0.63, 0.99].map((u) => pick({ topP: 0.6 }, u))).toEqual([1, 2, 2]);
    // top-p 0.5 → id 1 alone reaches it
    expect(pick({ topP: 0.5 }, 0.99)).toBe(1);
  });

  // Catches: the top-p loop testing `cum <= topP·mass` instead of `<` (a token past the boundary kept).
  it('top-p stops as soon as the kept mass reaches p exactly', () => {
    // logits [0, 0]: p = [0.5, 0.5]; top-p 0.5: token 0 alone reaches 0.5, so only it is kept and every
    // u picks it. With `<=` the loop also keeps token 1 (0.5 ≤ 0.5) and u = 0.9 lands on token 1.
    const tie = new Float32Array([0, 0]);
    for (const u of [0.1, 0.6, 0.9]) expect(chooseToken(tie, { temperature: 1, topK: 0, topP: 0.5 }, u).token).toBe(0);
    expect(chooseToken(tie, { temperature: 1, topK: 0, topP: 0.5 }, 0.9).logp).toBeCloseTo(Math.log(0.5), 6);
  });

  it('applies temperature to the kept distribution', () => {
    // T = 2: weights ∝ sqrt(p) = [.447, .707, .548]; CDF boundaries .263 and .678
    expect([0.26, 0.27, 0.67, 0.68].map((u) => pick({ temperature: 2 }, u))).toEqual([0, 1, 1, 2]);
    // with top-k 2 (ids 1 and 2): .707 / 1.255 = .563
    expect([0.56, 0.57].map((u) => pick({ temperature: 2, topK: 2 }, u))).toEqual([1, 2]);
  });

  it('is greedy at temperature 0 and with top-k 1', () => {
    expect(pick({ temperature: 0 }, 0.99)).toBe(1);
    expect(pick({ topK: 1 }, 0.99)).toBe(1);
  });
});

describe('sample', () => {
  const alone: SampleRequest = { prompt: prompt('Tell me a story'), key: [3, 0, 1] };
  const others: SampleRequest[] = [
    { prompt: prompt('Hi'), key: [3, 1, 0] },
    { prompt: prompt('A much longer prompt that pads the others'), key: [3, 2, 0] },
  ];

  it('gives the same tokens for a (seed, key) alone, inside a mixed batch, and on a fresh model instance', async () => {
    const [single] = await sample(model, tok, [alone], opts());
    const batched = await sample(model, tok, [others[0]!, alone, others[1]!], opts());
    const fresh = await sample(new LlamaModel(config, peakedWeights(11)), tok, [others[1]!, alone], opts());
    expect(batched[1]!.tokens).toEqual(single!.tokens);
    expect(fresh[1]!.tokens).toEqual(single!.tokens);
    batched[1]!.logps.forEach((lp, i) => expect(Math.abs(lp - single!.logps[i]!)).toBeLessThan(1e-4));
    // Another key or seed draws differently (12 tokens over 264 ids: equal by chance is negligible).
    const [otherKey] = await sample(model, tok, [{ ...alone, key: [3, 0, 2] }], opts());
    const [otherSeed] = await sample(model, tok, [alone], opts({ seed: 6 }));
    expect(otherKey!.tokens).not.toEqual(single!.tokens);
    expect(otherSeed!.tokens).not.toEqual(single!.tokens);
  });

  it('decodes greedily to the argmax of a full recompute, with matching log-probs', async () => {
    const requests = [alone, ...others];
    const results = await sample(model, tok, requests, opts({ temperature: 0, maxNewTokens: 10 }));
    for (const [r, res] of results.entries()) {
      const p = requests[r]!.prompt;
      expect(res.tokens).toHaveLength(10);
      expect(res.finish).toBe('length');
      for (let t = 0; t < res.tokens.length; t++) {
        const seq = [...p, ...res.tokens.slice(0, t)];
        const { logits } = await model.forward({
          tokens: [seq],
          positions: [seq.map((_, k) => k)],
          attnBias: causalBias([seq.length], seq.length),
        });
        const last = logits.subarray((seq.length - 1) * config.vocab_size, seq.length * config.vocab_size);
        expect(res.tokens[t]).toBe(last.indexOf(Math.max(...last)));
      }
      const [full] = await model.tokenLogps([{ tokens: [...p, ...res.tokens], start: p.length }]);
      full!.forEach((lp, i) => expect(Math.abs(lp - res.logps[i]!)).toBeLessThan(1e-4));
    }
  });

  it('treats top-k 1 as greedy', async () => {
    const greedy = await sample(model, tok, [alone, ...others], opts({ temperature: 0 }));
    const topK1 = await sample(model, tok, [alone, ...others], opts({ topK: 1, temperature: 0.7 }));
    expect(topK1.map((r) => r.tokens)).toEqual(greedy.map((r) => r.tokens));
  });

  it('cuts generation at a stop string and drops it from tokens and text', async () => {
    const [free] = await sample(model, tok, [alone], opts({ temperature: 0, maxNewTokens: 16 }));
    // A stop string taken from the unstopped output, starting at a clean character boundary.
    const text = free!.text;
    const i = [...text].findIndex(
      (c, k) =>
        k >= 3 && c !== '\ufffd' && text[k - 1] !== '\ufffd' && text[k + 1] !== undefined && text[k + 1] !== '\ufffd',
    );
    expect(i).toBeGreaterThan(0);
    const stop = text.slice(i, i + 2);
    const cut = text.indexOf(stop);
    const [stopped] = await sample(
      model,
      tok,
      [alone],
      opts({ temperature: 0, maxNewTokens: 16, stop: ['never-appears', stop] }),
    );
    expect(stopped!.finish).toBe('stop');
    expect(stopped!.text).toBe(text.slice(0, cut));
    expect(stopped!.text).not.toContain(stop);
    expect(tok.decode(stopped!.tokens)).toBe(stopped!.text);
    expect(stopped!.tokens).toEqual(free!.tokens.slice(0, stopped!.tokens.length));
    expect(stopped!.logps).toHaveLength(stopped!.tokens.length);
  });

  it('ends at EOS, keeping EOS in tokens but not in text', async () => {
    const [free] = await sample(model, tok, [alone], opts({ temperature: 0, maxNewTokens: 8 }));
    const eosAt = 3;
    // The byte tokenizer with the 4th greedy token declared as EOS: the run must stop right there.
    const eosId = free!.tokens[eosAt]!;
    const withEos: Tokenizer = {
      ...tok,
      specialIds: tok.specialIds,
      eosId,
      encode: (s) => tok.encode(s),
      decode: (ids) => tok.decode(ids),
    };
    const first = free!.tokens.indexOf(eosId);
    const [ended] = await sample(model, withEos, [alone], opts({ temperature: 0, maxNewTokens: 8 }));
    expect(ended!.finish).toBe('eos');
    expect(ended!.tokens).toEqual(free!.tokens.slice(0, first + 1));
    expect(ended!.text).toBe(tok.decode(free!.tokens.slice(0, first)));
  });

  it('keeps every row identical to its solo run while finished rows leave the batch', async () => {
    const requests = Array.from({ length: 8 }, (_, k) => ({
      prompt: prompt(`prompt ${'#'.repeat(3 * k)}`),
      key: [1, k, 0],
    }));
    const o = opts({ maxNewTokens: 16, temperature: 0.5 });
    const free = await sample(model, tok, requests, o);
    // Declare EOS the token that most rows generate early, so rows end at different steps and the
    // batch shrinks (8 → 4 → 2 slots) while the others keep decoding from the compacted cache.
    const counts = new Map<number, number>();
    for (const r of free) for (const t of new Set(r.tokens.slice(0, 10))) counts.set(t, (counts.get(t) ?? 0) + 1);
    const eosId = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
    const withEos: Tokenizer = {
      ...tok,
      specialIds: tok.specialIds,
      eosId,
      encode: (s) => tok.encode(s),
      decode: (ids) => tok.decode(ids),
    };
    const batched = await sample(model, withEos, requests, o);
    expect(batched.filter((r) => r.finish === 'eos' && r.tokens.length <= 10).length).toBeGreaterThanOrEqual(5);
    expect(batched.some((r) => r.finish === 'length')).toBe(true);
    for (const [k, req] of requests.entries()) {
      const [solo] = await sample(model, withEos, [req], o);
      expect(batched[k]!.tokens).toEqual(solo!.tokens);
      expect(batched[k]!.finish).toBe(solo!.finish);
    }
  });

  // Catches: an HF tokenizer's decode of a row that kept no tokens crashing the whole batch.
  it('returns empty text for rows that keep no tokens, with an HF tokenizer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sample-hf-'));
    try {
      await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tinyBpeTokenizerJson()));
      const hf = await loadHfTokenizer(dir);
      const req = { prompt: [hf.bosId, ...hf.encode('hello world')], key: [4, 0, 0] };
      const [none] = await sample(model, hf, [req], opts({ maxNewTokens: 0 }));
      expect(none).toMatchObject({ tokens: [], text: '', finish: 'length' });
      // A stop string inside the first token: nothing is kept.
      const [free] = await sample(model, hf, [req], opts({ temperature: 0, maxNewTokens: 4 }));
      const first = hf.decode(free!.tokens.slice(0, 1));
      const [stopped] = await sample(model, hf, [req], opts({ temperature: 0, maxNewTokens: 4, stop: [first] }));
      expect(stopped!.text).toBe('');
      expect(stopped!.finish).toBe('stop');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('respects maxNewTokens, reports progress, and keeps results in request order', async () => {
    const requests = Array.from({ length: 5 }, (_, k) => ({ prompt: prompt('x'.repeat(k + 1)), key: [0, k, 0] }));
    const progress: [number, number][] = [];
    const results = await sample(model, tok, requests, opts({ maxNewTokens: 7, batchSize: 2 }), (d, n) =>
      progress.push([d, n]),
    );
    expect(results.map((r) => r.tokens.length)).toEqual([7, 7, 7, 7, 7]);
    expect(results.every((r) => r.finish === 'length')).toBe(true);
    expect(progress[progress.length - 1]).toEqual([5, 5]);
    // Same draws as each request sampled alone: order and chunking do not matter.
    for (const [k, req] of requests.entries()) {
      const [solo] = await sample(model, tok, [req], opts({ maxNewTokens: 7 }));
      expect(results[k]!.tokens).toEqual(solo!.tokens);
    }
  });

  it('rejects bad options and prompts, naming the field', async () => {
    await expect(sample(model, tok, [alone], opts({ topP: 0 }))).rejects.toThrow(
      'sample: topP must be in (0, 1] (1 = off), got 0',
    );
    await expect(sample(model, tok, [alone], opts({ temperature: -1 }))).rejects.toThrow(
      'temperature must be a finite number >= 0, got -1',
    );
    await expect(sample(model, tok, [{ prompt: [], key: [0] }], opts())).rejects.toThrow(
      'requests[0].prompt must not be empty',
    );
    await expect(sample(model, tok, [{ prompt: [999], key: [0] }], opts())).rejects.toThrow(
      'requests[0].prompt has token 999 outside the vocabulary [0, 264)',
    );
    await expect(sample(model, tok, [alone], opts({ maxNewTokens: 1000 }))).rejects.toThrow(
      `exceeds max_position_embeddings ${config.max_position_embeddings}`,
    );
  });
});
