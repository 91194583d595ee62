/**
 * Hugging Face tokenizers with their chat templates and special ids, against what transformers itself
 * computed from the same directories (test/fixtures/hf-tokenizers, written by
 * scripts/fixtures/make_tokenizer_fixtures.py with transformers 5.24): rendered prompts and their ids,
 * the OPERA scoring contexts after them, `<think>` as one token, the eos ids generation stops on.
 */
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scoreResponses } from '../../activities/engine';
import { sftExamples } from '../../activities/sft';
import { llamaConfigSchema, modelPresets } from '../../engine/config';
import { LlamaModel, initWeights, type Weights } from '../../engine/model';
import { sample } from '../../engine/sampler';
import { scoringContexts } from '../../opera/reward';
import {
  ByteTokenizer,
  contextTokens,
  loadHfTokenizer,
  promptTokens,
  stopIds,
  tokenizerFromSpec,
  type Tokenizer,
} from '../../engine/tokenizer';

const FIXTURES = join(__dirname, '..', 'fixtures', 'hf-tokenizers');

interface Expected {
  template_source: string;
  chat: {
    prompt: string;
    text: string;
    ids: number[];
    text_thinking_off: string;
    scoring: { response: string; initial: number[]; full: number[] };
  }[];
  encode: { text: string; ids: number[]; decoded: string }[];
  special: {
    vocab_size: number;
    eos_token_id: number;
    think_ids: [number, number];
    generate_eos_token_id: number | number[];
    generate_eos_token_id_without_generation_config: number | number[];
  };
}
const expected = (name: string): Expected =>
  JSON.parse(readFileSync(join(FIXTURES, name, 'expected.json'), 'utf8')) as Expected;
const list = (v: number | number[]) => [v].flat();

/** The special tokens each fixture was made with (scripts/fixtures/make_tokenizer_fixtures.py). */
const NAMED = {
  'qwen3-like': {
    stop: ['<|im_end|>', '<|endoftext|>'],
    eos: '<|im_end|>',
    bos: '<|endoftext|>',
    pad: '<|endoftext|>',
  },
  'llama3-like': {
    stop: ['<|end_of_text|>', '<|eot_id|>'],
    eos: '<|eot_id|>',
    bos: '<|begin_of_text|>',
    pad: '<|eot_id|>', // none named anywhere: EOS
  },
} as const;

/** A copy of a fixture directory to edit. */
async function copyOf(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `tok-${name}-`));
  await cp(join(FIXTURES, name), dir, { recursive: true });
  return dir;
}
const editJson = async (path: string, edit: (json: Record<string, unknown>) => void) => {
  const json = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  edit(json);
  await writeFile(path, JSON.stringify(json));
};

const temps: string[] = [];
afterAll(() => Promise.all(temps.map((d) => rm(d, { recursive: true, force: true }))));
const scratch = async (name: string) => {
  const dir = await copyOf(name);
  temps.push(dir);
  return dir;
};

describe.each(['qwen3-like', 'llama3-like'] as const)('the %s fixture', (name) => {
  const exp = expected(name);
  let tok: Tokenizer;
  const id = (text: string) => tok.specialIds[text]!;
  beforeAll(async () => {
    tok = await loadHfTokenizer(join(FIXTURES, name));
  });

  it('renders each prompt as apply_chat_template does (thinking on), and promptTokens are its ids', () => {
    expect(tok.chatTemplate?.source).toContain(name === 'qwen3-like' ? 'chat_template.jinja' : '"default"');
    for (const c of exp.chat) {
      expect(tok.chatTemplate!.render(c.prompt)).toBe(c.text);
      expect(promptTokens(tok, c.prompt)).toEqual(c.ids);
    }
    // The template's BOS is the only one: Llama 3 writes it, Qwen3 has none.
    const first = promptTokens(tok, exp.chat[0]!.prompt);
    expect(first.filter((t) => t === tok.bosId)).toHaveLength(name === 'llama3-like' ? 1 : 0);
  });

  it('scores after the templated prompt: contexts equal transformers encoding its text + "<think>" / + a response', () => {
    for (const c of exp.chat) {
      expect(contextTokens(tok, c.prompt, '<think>')).toEqual(c.scoring.initial);
      expect(contextTokens(tok, c.prompt, c.scoring.response)).toEqual(c.scoring.full);
      expect(c.scoring.initial).toEqual([...c.ids, id('<think>')]);
    }
  });

  it('keeps <think> and </think> single tokens in encode, and decodes losslessly, as transformers', () => {
    expect([id('<think>'), id('</think>')]).toEqual(exp.special.think_ids);
    for (const e of exp.encode) {
      expect(tok.encode(e.text)).toEqual(e.ids);
      expect(tok.decode(e.ids)).toBe(e.decoded);
    }
  });

  it('stops on the eos ids generate stops on; eosId is the tokenizer eos; bos and pad by precedence', () => {
    const n = NAMED[name];
    expect(stopIds(tok)).toEqual(list(exp.special.generate_eos_token_id));
    expect(stopIds(tok)).toEqual(n.stop.map(id));
    expect(tok.eosId).toBe(exp.special.eos_token_id);
    expect([tok.eosId, tok.bosId, tok.padId]).toEqual([id(n.eos), id(n.bos), id(n.pad)]);
    expect(tok.vocabSize).toBe(exp.special.vocab_size);
    // A copy that redefines eosId (as sampler tests and scripts do) stops on that id, not on the stale list.
    expect(stopIds({ ...tok, eosId: 5 })).toEqual([5]);
  });

  it("data.chatTemplate 'none': BOS + the raw prompt, and whole-text contexts, as before templates", async () => {
    const raw = await tokenizerFromSpec(join(FIXTURES, name), 'none');
    expect(raw.chatTemplate).toBeUndefined();
    const p = exp.chat[1]!.prompt;
    expect(promptTokens(raw, p)).toEqual([raw.bosId, ...raw.encode(p)]);
    expect(promptTokens(raw, p)).not.toEqual(promptTokens(tok, p));
    expect(contextTokens(raw, p, '<think>x')).toEqual([raw.bosId, ...raw.encode(`${p}<think>x`)]);
  });
});

describe('Qwen3-style thinking', () => {
  // Catches: rendering without enable_thinking true would not differ here (the template tests `is false`),
  // but rendering it false would: the prompt would end in an empty, closed think block that OPERA never scores.
  it('never renders the closed empty think block of enable_thinking false', async () => {
    const tok = await loadHfTokenizer(join(FIXTURES, 'qwen3-like'));
    for (const c of expected('qwen3-like').chat) {
      expect(c.text_thinking_off).toBe(`${c.text}<think>\n\n</think>\n\n`);
      expect(tok.chatTemplate!.render(c.prompt)).not.toContain('<think>');
    }
  });
});

describe('special-id precedence and errors', () => {
  it('without generation_config.json, stops on config.json eos_token_id (as transformers), plus the tokenizer eos', async () => {
    for (const name of ['qwen3-like', 'llama3-like'] as const) {
      const dir = await scratch(name);
      await rm(join(dir, 'generation_config.json'));
      const tok = await loadHfTokenizer(dir);
      const fromConfig = list(expected(name).special.generate_eos_token_id_without_generation_config);
      // qwen3-like: config.json says <|im_end|>, which is the tokenizer eos too. llama3-like: config.json
      // says <|end_of_text|> only; SFT targets end with <|eot_id|>, so it must stop generation as well.
      const eos = tok.specialIds[NAMED[name].eos]!;
      expect(stopIds(tok)).toEqual(fromConfig.includes(eos) ? fromConfig : [...fromConfig, eos]);
      expect(tok.eosId).toBe(eos);
    }
  });

  it('a generation_config.json without eos_token_id defers to config.json; without either, the tokenizer eos', async () => {
    const dir = await scratch('qwen3-like');
    await editJson(join(dir, 'generation_config.json'), (j) => {
      delete j.eos_token_id;
    });
    await editJson(join(dir, 'config.json'), (j) => {
      j.eos_token_id = [322, 321];
    });
    expect(stopIds(await loadHfTokenizer(dir))).toEqual([322, 321]);
    await editJson(join(dir, 'config.json'), (j) => {
      j.eos_token_id = null;
    });
    expect(stopIds(await loadHfTokenizer(dir))).toEqual([322]);
  });

  it('bos and pad: tokenizer_config.json first, then generation_config.json, then config.json, then eos', async () => {
    const dir = await scratch('qwen3-like'); // ids: 320 <|endoftext|>, 321 <|im_start|>, 322 <|im_end|>
    const load = async () => {
      const t = await loadHfTokenizer(dir);
      return [t.bosId, t.padId];
    };
    expect(await load()).toEqual([320, 320]); // bos from generation_config.json, pad from the tokenizer
    await editJson(join(dir, 'tokenizer_config.json'), (j) => {
      j.bos_token = '<|im_start|>';
    });
    await editJson(join(dir, 'generation_config.json'), (j) => {
      j.pad_token_id = 321;
    });
    expect(await load()).toEqual([321, 320]);
    await editJson(join(dir, 'tokenizer_config.json'), (j) => {
      j.bos_token = null;
      j.pad_token = null;
    });
    expect(await load()).toEqual([320, 321]);
    await editJson(join(dir, 'generation_config.json'), (j) => {
      delete j.bos_token_id;
      delete j.pad_token_id;
    });
    await editJson(join(dir, 'config.json'), (j) => {
      j.bos_token_id = 321;
    });
    expect(await load()).toEqual([321, 322]); // pad: none named anywhere → eos
  });

  it('names the file and key of an unknown token, a bad id, or a value of the wrong type', async () => {
    const dir = await scratch('qwen3-like');
    const cases: [string, string, unknown, string][] = [
      ['tokenizer_config.json', 'eos_token', '<|im_finish|>', 'eos_token "<|im_finish|>" is not in the vocabulary'],
      ['tokenizer_config.json', 'pad_token', { content: '<nope>' }, 'pad_token "<nope>" is not in the vocabulary'],
      ['tokenizer_config.json', 'bos_token', 7, 'bos_token must be a token string'],
      ['generation_config.json', 'eos_token_id', [322, 9999], 'eos_token_id 9999 is not a token id'],
      ['generation_config.json', 'eos_token_id', [], 'eos_token_id is an empty list'],
      ['config.json', 'bos_token_id', [1, 2], 'bos_token_id must be an integer id, got [1,2]'],
      ['generation_config.json', 'pad_token_id', '320', 'pad_token_id must be an integer id'],
    ];
    for (const [file, key, value, message] of cases) {
      const path = join(dir, file);
      const before = await readFile(path, 'utf8');
      await editJson(path, (j) => {
        j[key] = value;
      });
      await expect(loadHfTokenizer(dir)).rejects.toThrow(`${path}: ${message}`);
      await writeFile(path, before);
    }
    await loadHfTokenizer(dir); // every edit was undone
  });
});

describe('where the template comes from, and templates that cannot be used', () => {
  const prompt = expected('llama3-like').chat[0]!;

  it("takes tokenizer_config.json's chat_template as a string or the list's 'default'; chat_template.jinja wins", async () => {
    const dir = await scratch('llama3-like');
    const configPath = join(dir, 'tokenizer_config.json');
    await editJson(configPath, (j) => {
      j.chat_template = (j.chat_template as { template: string }[])[0]!.template;
    });
    const fromString = await loadHfTokenizer(dir);
    expect(fromString.chatTemplate!.source).toBe(`${configPath} chat_template`);
    expect(promptTokens(fromString, prompt.prompt)).toEqual(prompt.ids);
    await writeFile(join(dir, 'chat_template.jinja'), 'J:{{ messages[0].content }}');
    const fromFile = await loadHfTokenizer(dir);
    expect(fromFile.chatTemplate!.render('hi')).toBe('J:hi');
  });

  it('refuses, naming the file, a template that does not parse, raises, drops the prompt, or has no default', async () => {
    const dir = await scratch('qwen3-like');
    const jinja = join(dir, 'chat_template.jinja');
    for (const [text, message] of [
      ['{% if messages %}unclosed', 'the chat template does not parse'],
      [
        "{{ raise_exception('system messages only') }}",
        'the chat template fails to render a prompt: system messages only',
      ],
      ['{{ messages[0].content[0].text }}', 'the chat template does not copy a user message'],
    ]) {
      await writeFile(jinja, text!);
      await expect(loadHfTokenizer(dir)).rejects.toThrow(`${jinja}: ${message}`);
      // data.chatTemplate: none does not even read it.
      expect((await tokenizerFromSpec(dir, 'none')).chatTemplate).toBeUndefined();
    }
    await rm(jinja);
    const configPath = join(dir, 'tokenizer_config.json');
    await editJson(configPath, (j) => {
      j.chat_template = [{ name: 'tool_use', template: '{{ messages }}' }];
    });
    await expect(loadHfTokenizer(dir)).rejects.toThrow(`${configPath} chat_template: a list of templates ("tool_use")`);
  });
});

/** Random weights scaled up so greedy choices are far from ties (as in sampler.test.ts). */
function peaked(config: ReturnType<typeof llamaConfigSchema.parse>, seed: number): Weights {
  const w = initWeights(config, seed);
  for (const d of w.values()) if (d.length > config.hidden_size) for (let i = 0; i < d.length; i++) d[i]! *= 15;
  return w;
}

describe('the engine with a templated HF tokenizer', () => {
  let tok: Tokenizer;
  let config: ReturnType<typeof llamaConfigSchema.parse>;
  beforeAll(async () => {
    tok = await loadHfTokenizer(join(FIXTURES, 'qwen3-like'));
    config = llamaConfigSchema.parse({ ...modelPresets.tiny, vocab_size: tok.vocabSize });
  });
  const greedy = { temperature: 0, topK: 0, topP: 1, maxNewTokens: 8, seed: 3 };

  it('stops sampling on the second eos id (<|endoftext|>, not eosId), keeping it in tokens but not in text', async () => {
    const weights = peaked(config, 21);
    const prompt = promptTokens(tok, 'What is 2+2?');
    const free: Tokenizer = {
      vocabSize: tok.vocabSize,
      bosId: tok.bosId,
      eosId: -1,
      eosIds: [],
      padId: tok.padId,
      specialIds: tok.specialIds,
      encode: (s) => tok.encode(s),
      decode: (ids) => tok.decode(ids),
    };
    const [run] = await sample(new LlamaModel(config, weights), free, [{ prompt, key: [0] }], greedy);
    const [first, second] = stopIds(tok) as [number, number];
    expect(second).not.toBe(tok.eosId);
    const at = 3;
    const said = run!.tokens[at]!;
    expect(run!.tokens.slice(0, at + 1).some((t) => t === first || t === second)).toBe(false);
    // Rename ids `said` <-> `second` in the vocabulary (their embedding and LM-head rows): the renamed model's
    // greedy run is the free run renamed, so it says `second` at step `at`.
    const swap = (t: number) => (t === said ? second : t === second ? said : t);
    const renamed: Weights = new Map();
    for (const [name, d] of weights) {
      if (name !== 'model.embed_tokens.weight' && name !== 'lm_head.weight') {
        renamed.set(name, d);
        continue;
      }
      const C = config.hidden_size;
      const r = Float32Array.from(d);
      r.set(d.subarray(said * C, (said + 1) * C), second * C);
      r.set(d.subarray(second * C, (second + 1) * C), said * C);
      renamed.set(name, r);
    }
    const [ended] = await sample(
      new LlamaModel(config, renamed),
      tok,
      [{ prompt: prompt.map(swap), key: [0] }],
      greedy,
    );
    expect(ended!.finish).toBe('eos');
    expect(ended!.tokens).toEqual(run!.tokens.slice(0, at + 1).map(swap));
    expect(ended!.tokens.at(-1)).toBe(second);
    expect(ended!.text).toBe(tok.decode(ended!.tokens.slice(0, -1)));
  });

  it("scores the reference after transformers' ids of the templated prompt + '<think>' and + the response", async () => {
    const model = new LlamaModel(config, peaked(config, 5));
    const c = expected('qwen3-like').chat[1]!;
    const reference = 'The fox is red.';
    const target = tok.encode(reference);
    const [scored] = await scoreResponses(model, tok, [{ prompt: c.prompt, reference, response: c.scoring.response }]);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const after = async (context: number[]) =>
      mean((await model.tokenLogps([{ tokens: [...context, ...target], start: context.length }]))[0]!);
    expect(scored!.logpInitial).toBeCloseTo(await after(c.scoring.initial), 4);
    expect(scored!.logpFull).toBeCloseTo(await after(c.scoring.full), 4);
    // Two reasoning steps: "First idea." and "Wait, check again.".
    const step = [...c.ids, ...tok.encode('<think>First idea.\n\n')];
    expect(scored!.logpSegments).toHaveLength(2);
    expect(scored!.logpSegments[0]).toBeCloseTo(await after(step), 4);
  });
});

describe('SFT examples with a template', () => {
  it("are transformers' templated prompt ids, then the response and the tokenizer eos, loss on the response", async () => {
    const tok = await loadHfTokenizer(join(FIXTURES, 'qwen3-like'));
    const c = expected('qwen3-like').chat[0]!;
    const response = '<think>\n2+2=4.\n</think>\n\n4';
    const [ex] = sftExamples([{ id: 'a', prompt: c.prompt, response }], tok);
    // <|im_end|>: how Qwen3's template ends an assistant turn, and its tokenizer's eos.
    expect(ex!.tokens).toEqual([...c.ids, ...tok.encode(response), tok.specialIds['<|im_end|>']]);
    expect(ex!.lossMask.indexOf(1)).toBe(c.ids.length);
  });
});

describe('the byte tokenizer is unchanged', () => {
  const byte = new ByteTokenizer();
  it('has no template: BOS + prompt, whole-text contexts, stops on <eos> alone', async () => {
    expect((byte as Tokenizer).chatTemplate).toBeUndefined();
    expect(await tokenizerFromSpec('byte', 'auto')).toBeInstanceOf(ByteTokenizer);
    expect(promptTokens(byte, 'Hi<think>')).toEqual([257, 72, 105, 259]);
    expect(contextTokens(byte, 'Hi', '<think>a\n\n')).toEqual([257, 72, 105, 259, 97, 10, 10]);
    expect(stopIds(byte)).toEqual([258]);
  });

  it('scores exactly as before: contexts are BOS + the whole text of prompt + response, + "<think>", + each step', async () => {
    const model = new LlamaModel(modelPresets.tiny, peaked(modelPresets.tiny, 8));
    const item = { prompt: 'Q: a fox?', reference: 'Red.', response: '<think>Hmm.\n\nWait, red.</think>Red.' };
    const [scored] = await scoreResponses(model, byte, [item]);
    // The construction scoreResponses used before templates existed.
    const ctx = scoringContexts(item.prompt, item.response);
    const target = byte.encode(item.reference);
    const chain = [ctx.initial, ...ctx.segments];
    const [full, rest] = await model.scoreCheckpoints([
      { context: promptTokens(byte, ctx.full), checkpoints: [promptTokens(byte, ctx.full).length], target },
      {
        context: promptTokens(byte, chain.at(-1)!),
        checkpoints: chain.map((t) => promptTokens(byte, t).length),
        target,
      },
    ]);
    const [fullProb] = await model.checkpointScores([
      { context: promptTokens(byte, ctx.full), checkpoints: [promptTokens(byte, ctx.full).length], target },
    ]);
    expect(scored).toEqual({
      logpFull: full![0],
      logpInitial: rest![0],
      logpSegments: rest!.slice(1),
      probFull: fullProb![0]!.meanProb,
    });
    expect(scored!.logpSegments).toHaveLength(2);
  });
});
