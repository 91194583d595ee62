import { tinyBpeTokenizerJson } from './helpers';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteTokenizer, loadHfTokenizer, tokenizerFromSpec } from '../../engine/tokenizer';

describe('ByteTokenizer', () => {
  const tok = new ByteTokenizer();

  it('maps bytes to 0-255 and special strings to their single ids', () => {
    expect(tok.vocabSize).toBe(264);
    expect(tok.vocabSize % 8).toBe(0);
    expect(tok.specialIds).toEqual({ '<pad>': 256, '<bos>': 257, '<eos>': 258, '<think>': 259, '</think>': 260 });
    expect([tok.padId, tok.bosId, tok.eosId]).toEqual([256, 257, 258]);
    expect(tok.encode('Hi')).toEqual([72, 105]);
    expect(tok.encode('é')).toEqual([0xc3, 0xa9]);
    expect(tok.encode('a<think>b</think>c<eos>')).toEqual([97, 259, 98, 260, 99, 258]);
    // Near-misses stay plain bytes.
    expect(tok.encode('<thin>')).toEqual([...Buffer.from('<thin>')]);
  });

  it('round-trips text, including multi-byte characters and specials', () => {
    for (const s of [
      '',
      'plain',
      'naïve 🚀 中文',
      '<think>\nWait, 2+2=4.\n\n</think>The answer',
      '<<think>>',
      '</thinking>',
    ]) {
      expect(tok.decode(tok.encode(s))).toBe(s);
    }
  });

  it('has the prefix property at every split point outside a special token', () => {
    const text = 'Prompt: write a poem.<think>First idea.\n\nBut wait — 🚀 better.\n\n</think>Roses<eos>';
    const whole = tok.encode(text);
    const insideSpecial = new Set<number>();
    for (const s of Object.keys(tok.specialIds)) {
      for (let at = text.indexOf(s); at >= 0; at = text.indexOf(s, at + 1)) {
        for (let k = at + 1; k < at + s.length; k++) insideSpecial.add(k);
      }
    }
    let checked = 0;
    for (let k = 0; k <= text.length; k++) {
      const code = text.charCodeAt(k);
      if (insideSpecial.has(k) || (code >= 0xdc00 && code <= 0xdfff)) continue; // inside a special or a surrogate pair
      expect([...tok.encode(text.slice(0, k)), ...tok.encode(text.slice(k))]).toEqual(whole);
      checked++;
    }
    expect(checked).toBeGreaterThan(60);
  });

  it('decodes the alignment padding ids to nothing and rejects ids outside the vocabulary', () => {
    expect(tok.decode([72, 261, 262, 263, 105])).toBe('Hi');
    expect(() => tok.decode([72, 264])).toThrow('id 264 at position 1 is outside the vocabulary [0, 264)');
    expect(() => tok.decode([-1])).toThrow('id -1 at position 0');
  });
});

/** GPT-2's byte → printable-character table, so the fixture vocabulary covers every byte. */

describe('loadHfTokenizer', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tok-'));
    const tokenizerJson = tinyBpeTokenizerJson();
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
    await writeFile(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ eos_token: '<|endoftext|>', bos_token: null, pad_token: null }),
    );
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('encodes with the BPE merges and keeps added tokens whole', async () => {
    const tok = await loadHfTokenizer(dir);
    const ids = tok.encode('hello world<think>x</think>');
    // 'hello' is merge 259, ' w' is merge 260; o r l d x are their bytes; <think> 262, </think> 263.
    expect(ids).toEqual([259, 260, 111, 114, 108, 100, 262, 120, 263]);
    expect(tok.specialIds['<think>']).toBe(262);
    expect(tok.decode(ids)).toBe('hello world<think>x</think>');
    expect(tok.vocabSize).toBe(256 + 5 + 3);
  });

  // Catches: the library's throw on an empty list (Python `tokenizers` returns '').
  it('decodes an empty list to the empty string', async () => {
    const tok = await loadHfTokenizer(dir);
    expect(tok.decode([])).toBe('');
  });

  it('takes EOS from tokenizer_config.json and falls back to it for BOS and PAD', async () => {
    const tok = await tokenizerFromSpec(join(dir, 'tokenizer.json'));
    const eos = tok.specialIds['<|endoftext|>'];
    expect(eos).toBe(261);
    expect([tok.eosId, tok.bosId, tok.padId]).toEqual([eos, eos, eos]);
  });

  it('names the file when it is missing or malformed', async () => {
    await expect(loadHfTokenizer(join(dir, 'nope.json'))).rejects.toThrow(
      `cannot read tokenizer.json ${join(dir, 'nope.json')}`,
    );
    const bad = join(dir, 'bad', 'tokenizer.json');
    await mkdir(join(dir, 'bad'), { recursive: true });
    await writeFile(bad, '{ not json');
    await expect(loadHfTokenizer(bad)).rejects.toThrow(`tokenizer.json ${bad} is not valid JSON`);
  });

  it("resolves 'byte' to the built-in tokenizer", async () => {
    expect(await tokenizerFromSpec('byte')).toBeInstanceOf(ByteTokenizer);
  });
});
