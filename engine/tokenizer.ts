/**
 * Tokenizers: a built-in byte-level tokenizer for models trained here, and Hugging Face
 * `tokenizer.json` loading (via @huggingface/tokenizers, not a hand-written BPE) for imported models.
 *
 * Neither `encode` adds BOS/EOS: callers put them where they belong.
 *
 * Piecewise encoding: the byte tokenizer guarantees encode(a + b) = encode(a) ++ encode(b) (see
 * ByteTokenizer). A BPE tokenizer does not (merges can span the split, e.g. "\n" + "\n" vs "\n\n"),
 * except at its added tokens such as `<think>`: code that needs token boundaries at text boundaries
 * must encode the pieces separately and concatenate, not encode the whole and search for the cut.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { jsonProblem } from '../util/json';
import { THINK_CLOSE, THINK_OPEN } from '../util/think';

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  /** Every special/added token's literal text → its id (e.g. `'<think>'` → 259). */
  readonly specialIds: Record<string, number>;
  encode(text: string): number[];
  decode(ids: number[]): string;
}

/** The byte tokenizer's special tokens, in id order from 256. */
export const BYTE_SPECIAL_TOKENS = ['<pad>', '<bos>', '<eos>', THINK_OPEN, THINK_CLOSE] as const;

/**
 * Ids 0–255 are the UTF-8 bytes; 256.. are `<pad>`, `<bos>`, `<eos>`, `<think>`, `</think>`; the
 * vocabulary is padded to 264 (a multiple of 8) so embedding and LM-head matmuls stay aligned.
 * Ids 261–263 are unused: encode never produces them and they decode to ''.
 *
 * `encode` turns the literal strings of the special tokens into their single ids, scanning left to
 * right. Because a special token is matched only by its own characters, this **prefix property**
 * holds: `encode(a + b)` equals `[...encode(a), ...encode(b)]` whenever the split between `a` and `b`
 * does not fall inside an occurrence of a special token (nor inside a UTF-16 surrogate pair).
 * OPERA scoring encodes `prompt + "<think>" + segments…` piecewise and relies on this to place its
 * checkpoints at exact token boundaries. `decode(encode(s)) === s` for every well-formed string.
 */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize = 264;
  readonly padId = 256;
  readonly bosId = 257;
  readonly eosId = 258;
  readonly specialIds: Record<string, number>;
  private readonly specials: { text: string; id: number }[];
  private readonly utf8 = new TextEncoder();

  constructor() {
    this.specialIds = {};
    BYTE_SPECIAL_TOKENS.forEach((text, i) => {
      this.specialIds[text] = 256 + i;
    });
    // Longest first, so a special that is a prefix of another could never shadow it.
    this.specials = Object.entries(this.specialIds)
      .map(([text, id]) => ({ text, id }))
      .sort((a, b) => b.text.length - a.text.length);
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    let plainStart = 0;
    let i = 0;
    while (i < text.length) {
      const special =
        text.charCodeAt(i) === 0x3c /* '<' */ ? this.specials.find((s) => text.startsWith(s.text, i)) : undefined;
      if (special === undefined) {
        i++;
        continue;
      }
      this.pushBytes(ids, text.slice(plainStart, i));
      ids.push(special.id);
      i += special.text.length;
      plainStart = i;
    }
    this.pushBytes(ids, text.slice(plainStart));
    return ids;
  }

  decode(ids: number[]): string {
    const decoder = new TextDecoder('utf-8');
    let out = '';
    let bytes: number[] = [];
    const flush = (): void => {
      if (bytes.length > 0) out += decoder.decode(Uint8Array.from(bytes));
      bytes = [];
    };
    for (const [pos, id] of ids.entries()) {
      if (Number.isInteger(id) && id >= 0 && id < 256) {
        bytes.push(id);
        continue;
      }
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(
          `ByteTokenizer.decode: id ${id} at position ${pos} is outside the vocabulary [0, ${this.vocabSize})`,
        );
      }
      flush();
      // The alignment padding ids (261-263) are never produced by encode; an untrained model may still
      // sample them, and they spell nothing.
      out += BYTE_SPECIAL_TOKENS[id - 256] ?? '';
    }
    flush();
    return out;
  }

  private pushBytes(ids: number[], text: string): void {
    if (text.length === 0) return;
    for (const b of this.utf8.encode(text)) ids.push(b);
  }
}

type TokenSpec = string | { content?: unknown } | null | undefined;

function tokenText(value: TokenSpec): string | undefined {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof value.content === 'string') return value.content;
  return undefined;
}

/** Adapts @huggingface/tokenizers to our interface: no automatic specials, lossless decode. */
class HfTokenizerAdapter implements Tokenizer {
  constructor(
    private readonly inner: HfTokenizer,
    readonly vocabSize: number,
    readonly bosId: number,
    readonly eosId: number,
    readonly padId: number,
    readonly specialIds: Record<string, number>,
  ) {}

  encode(text: string): number[] {
    return this.inner.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: number[]): string {
    // The library throws on an empty list where Python `tokenizers` returns '': a sampled row may keep no
    // tokens (maxNewTokens 0, EOS or a stop string first).
    if (ids.length === 0) return '';
    // Keep specials (`<think>` must survive a decode) and skip the clean-up that would change spacing.
    return this.inner.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}

async function readJson(path: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
      throw new Error(`${what} ${path}: its top level is not an object`);
    return parsed as Record<string, unknown>;
  } catch (err) {
    if ((err as Error).message.startsWith(`${what} ${path}:`)) throw err;
    throw new Error(`${what} ${path} is not valid JSON (${jsonProblem(err)})`);
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Loads a Hugging Face tokenizer from `tokenizer.json` (a file path, or a directory holding it),
 * together with `tokenizer_config.json` when it sits beside it (for BOS/EOS/PAD names).
 * BOS and PAD fall back to EOS when the tokenizer names none (GPT-2 and Qwen style); EOS is required.
 */
export async function loadHfTokenizer(path: string): Promise<Tokenizer> {
  const file = (await isDirectory(path)) ? join(path, 'tokenizer.json') : path;
  const json = await readJson(file, 'tokenizer.json');
  const configPath = join(dirname(file), 'tokenizer_config.json');
  const config = (await stat(configPath).then(
    () => true,
    () => false,
  ))
    ? await readJson(configPath, 'tokenizer_config.json')
    : {};

  let inner: HfTokenizer;
  try {
    inner = new HfTokenizer(json, config);
  } catch (err) {
    throw new Error(`cannot build a tokenizer from ${file}: ${(err as Error).message}`);
  }

  const vocab = inner.get_vocab(true);
  let maxId = -1;
  for (const id of vocab.values()) maxId = Math.max(maxId, id);
  const specialIds: Record<string, number> = {};
  for (const [id, token] of inner.get_added_tokens_decoder()) specialIds[token.content] = id;

  const idOf = (key: string): number | undefined => {
    const text = tokenText(config[key] as TokenSpec);
    if (text === undefined) return undefined;
    const id = inner.token_to_id(text);
    if (id === undefined) throw new Error(`${configPath}: ${key} "${text}" is not in the vocabulary of ${file}`);
    return id;
  };
  const eosId =
    idOf('eos_token') ??
    ['</s>', '<|endoftext|>', '<|end_of_text|>', '<eos>']
      .map((t) => inner.token_to_id(t))
      .find((id) => id !== undefined);
  if (eosId === undefined) {
    throw new Error(
      `${file}: no end-of-sequence token: set eos_token in ${configPath} (none of </s>, <|endoftext|>, <|end_of_text|>, <eos> is in the vocabulary)`,
    );
  }
  return new HfTokenizerAdapter(
    inner,
    maxId + 1,
    idOf('bos_token') ?? eosId,
    eosId,
    idOf('pad_token') ?? eosId,
    specialIds,
  );
}

/** `'byte'` → the built-in byte tokenizer; anything else is a path to an HF tokenizer.json (or its directory). */
/** BOS + prompt: every sequence of a run starts the same way (SFT, rollout, scoring, update, length checks). */
export const promptTokens = (tok: Tokenizer, prompt: string): number[] => [tok.bosId, ...tok.encode(prompt)];

export function tokenizerFromSpec(spec: 'byte' | string): Promise<Tokenizer> {
  if (spec === 'byte') return Promise.resolve(new ByteTokenizer());
  if (spec.trim() === '')
    return Promise.reject(new Error(`tokenizer spec is empty: expected 'byte' or a path to tokenizer.json`));
  return loadHfTokenizer(spec);
}
