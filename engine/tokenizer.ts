/**
 * Tokenizers: a built-in byte-level tokenizer for models trained here, and Hugging Face
 * `tokenizer.json` loading (via @huggingface/tokenizers, not a hand-written BPE) for imported models.
 *
 * Neither `encode` adds BOS/EOS: callers put them where they belong (`promptTokens`, `contextTokens`).
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
import { compileChatTemplate, findChatTemplate, type ChatTemplate, type ChatTemplateMode } from './chat-template';
import { resolveSpecialTokens, type JsonFile, type SpecialTokens } from './special-tokens';

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  /** The end-of-sequence id appended to SFT targets. */
  readonly eosId: number;
  /** Every id that ends generation (a model may have several); absent → `[eosId]`. See `stopIds`. */
  readonly eosIds?: readonly number[];
  readonly padId: number;
  /** Every special/added token's literal text → its id (e.g. `'<think>'` → 259). */
  readonly specialIds: Record<string, number>;
  /** The model's chat template (HF tokenizers that ship one); `promptTokens` formats prompts with it. */
  readonly chatTemplate?: ChatTemplate;
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

/** Adapts @huggingface/tokenizers to our interface: no automatic specials, lossless decode. */
class HfTokenizerAdapter implements Tokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  private readonly stopIds: readonly number[];

  constructor(
    private readonly inner: HfTokenizer,
    readonly vocabSize: number,
    special: SpecialTokens,
    readonly specialIds: Record<string, number>,
    readonly chatTemplate: ChatTemplate | undefined,
  ) {
    this.bosId = special.bosId;
    this.eosId = special.eosId;
    this.padId = special.padId;
    this.stopIds = special.eosIds;
  }

  /**
   * A getter, not a field: `{ ...tok, eosId }` (how tests and scripts redefine EOS) copies fields only,
   * so such a copy stops on its own `eosId` rather than on a stale list.
   */
  get eosIds(): readonly number[] {
    return this.stopIds;
  }

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

/** A JSON file beside tokenizer.json, or undefined when there is none. */
async function readJsonBeside(dir: string, name: string): Promise<JsonFile | undefined> {
  const path = join(dir, name);
  const exists = await stat(path).then(
    () => true,
    () => false,
  );
  return exists ? { path, json: await readJson(path, name) } : undefined;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export interface HfTokenizerOptions {
  /** false: leave the model's chat template out (`data.chatTemplate: none`); it is then not even read. */
  chatTemplate?: boolean;
}

/**
 * Loads a Hugging Face tokenizer from `tokenizer.json` (a file path, or a directory holding it), with
 * what sits beside it: `tokenizer_config.json`, the model's `config.json` and `generation_config.json`
 * (special ids: see engine/special-tokens.ts for which file wins), and its chat template
 * (engine/chat-template.ts).
 */
export async function loadHfTokenizer(path: string, options: HfTokenizerOptions = {}): Promise<Tokenizer> {
  const file = (await isDirectory(path)) ? join(path, 'tokenizer.json') : path;
  const dir = dirname(file);
  const json = await readJson(file, 'tokenizer.json');
  const tokenizerConfig = (await readJsonBeside(dir, 'tokenizer_config.json')) ?? {
    path: join(dir, 'tokenizer_config.json'),
    json: {},
  };

  let inner: HfTokenizer;
  try {
    inner = new HfTokenizer(json, tokenizerConfig.json);
  } catch (err) {
    throw new Error(`cannot build a tokenizer from ${file}: ${(err as Error).message}`);
  }

  const vocab = inner.get_vocab(true);
  let maxId = -1;
  for (const id of vocab.values()) maxId = Math.max(maxId, id);
  const specialIds: Record<string, number> = {};
  for (const [id, token] of inner.get_added_tokens_decoder()) specialIds[token.content] = id;

  const special = resolveSpecialTokens({
    tokenizerFile: file,
    vocabSize: maxId + 1,
    tokenToId: (text) => inner.token_to_id(text),
    tokenizerConfig,
    modelConfig: await readJsonBeside(dir, 'config.json'),
    generationConfig: await readJsonBeside(dir, 'generation_config.json'),
  });
  const found =
    options.chatTemplate === false
      ? undefined
      : await findChatTemplate(dir, tokenizerConfig.path, tokenizerConfig.json);
  const chatTemplate = found && compileChatTemplate(found.text, found.source, special.templateTokens);
  return new HfTokenizerAdapter(inner, maxId + 1, special, specialIds, chatTemplate);
}

/**
 * The tokens of a prompt as every sequence of a run starts (SFT, rollout, scoring, update, length
 * checks): the prompt rendered by the tokenizer's chat template when it has one (the template writes
 * BOS itself where the model wants one, so none is added), else BOS + the prompt.
 */
export const promptTokens = (tok: Tokenizer, prompt: string): number[] =>
  tok.chatTemplate ? tok.encode(tok.chatTemplate.render(prompt)) : [tok.bosId, ...tok.encode(prompt)];

/**
 * The tokens of `prompt` followed by `continuation` (a response, `<think>`, reasoning so far): what the
 * OPERA scoring contexts and a teacher's contexts are. A templated prompt is encoded apart from the
 * continuation, so its tokens are exactly the ones rollouts sampled after. Without a template the text
 * is encoded whole, as it always was (bit-identical for the byte tokenizer).
 */
export const contextTokens = (tok: Tokenizer, prompt: string, continuation: string): number[] =>
  tok.chatTemplate
    ? [...promptTokens(tok, prompt), ...tok.encode(continuation)]
    : promptTokens(tok, prompt + continuation);

/** Every id that ends generation. */
export const stopIds = (tok: Tokenizer): readonly number[] => tok.eosIds ?? [tok.eosId];

/**
 * `'byte'` → the built-in byte tokenizer; anything else is a path to an HF tokenizer.json (or its
 * directory), with its chat template unless `chatTemplate` is `'none'`.
 */
export function tokenizerFromSpec(spec: 'byte' | string, chatTemplate: ChatTemplateMode = 'auto'): Promise<Tokenizer> {
  if (spec === 'byte') return Promise.resolve(new ByteTokenizer());
  if (spec.trim() === '')
    return Promise.reject(new Error(`tokenizer spec is empty: expected 'byte' or a path to tokenizer.json`));
  return loadHfTokenizer(spec, { chatTemplate: chatTemplate === 'auto' });
}
