/**
 * EOS, BOS and PAD of a Hugging Face model, from the three files that carry them beside tokenizer.json:
 * `generation_config.json` and `config.json` (`*_token_id`: an id, or for eos a list of ids) and
 * `tokenizer_config.json` (`*_token`: a string, or an AddedToken dict `{"content": ...}`).
 *
 * Precedence, per key (a file without the key, or with null, defers to the next):
 * - stop ids (`eosIds`, every id that ends generation): generation_config.json `eos_token_id` >
 *   config.json `eos_token_id` > tokenizer_config.json `eos_token` > the first of `</s>`,
 *   `<|endoftext|>`, `<|end_of_text|>`, `<eos>` in the vocabulary. That is the order transformers'
 *   `generate` uses (generation/utils.py: it loads generation_config.json, or a generation config made
 *   from config.json when that file is absent, and stops on every id of `eos_token_id`; the tokenizer
 *   is not consulted). Two deliberate differences: a generation_config.json that lacks `eos_token_id`
 *   falls through to config.json here (transformers would never stop), and the tokenizer's eos is
 *   added to the stop ids when they miss it, since it is what SFT targets end with.
 * - `eosId` (appended to SFT targets): the tokenizer's `eos_token` (transformers' `tokenizer.eos_token_id`,
 *   and what the model's own chat template ends an assistant turn with: Llama 3.1 Instruct stops on
 *   [`<|end_of_text|>`, `<|eom_id|>`, `<|eot_id|>`] but its turns end with `<|eot_id|>`, its tokenizer's
 *   eos), else the first stop id.
 * - `bosId` (put in front of a prompt that no chat template formats): tokenizer_config.json `bos_token`
 *   (the tokenizer is what puts BOS in front of text) > generation_config.json > config.json
 *   `bos_token_id` > `eosId` (GPT-2 and Qwen style).
 * - `padId` (only fills masked positions): tokenizer_config.json `pad_token` > generation_config.json
 *   > config.json `pad_token_id` > `eosId`.
 *
 * A token string that is not in the vocabulary, an id outside it, or a value of the wrong type is an
 * error naming the file and the key, never a silent fallback.
 */
import { TEMPLATE_TOKEN_KEYS } from './chat-template';

export interface JsonFile {
  path: string;
  json: Record<string, unknown>;
}

export interface SpecialTokenSources {
  /** tokenizer.json, for messages. */
  tokenizerFile: string;
  vocabSize: number;
  tokenToId(text: string): number | undefined;
  /** tokenizer_config.json (its json is `{}` when the file is absent). */
  tokenizerConfig: JsonFile;
  /** config.json and generation_config.json, when present. */
  modelConfig?: JsonFile;
  generationConfig?: JsonFile;
}

export interface SpecialTokens {
  eosId: number;
  eosIds: number[];
  bosId: number;
  padId: number;
  /** The tokenizer's special token strings (`bos_token`, …) as a chat template sees them. */
  templateTokens: Record<string, string>;
}

const FALLBACK_EOS = ['</s>', '<|endoftext|>', '<|end_of_text|>', '<eos>'];

/** A `*_token` of tokenizer_config.json as text: a string or `{"content": string}`; undefined when absent or null. */
function tokenText(file: JsonFile, key: string): string | undefined {
  const value = file.json[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  throw new Error(`${file.path}: ${key} must be a token string or {"content": "..."}, got ${JSON.stringify(value)}`);
}

export function resolveSpecialTokens(s: SpecialTokenSources): SpecialTokens {
  const tokenId = (key: string): number | undefined => {
    const text = tokenText(s.tokenizerConfig, key);
    if (text === undefined) return undefined;
    const id = s.tokenToId(text);
    if (id === undefined)
      throw new Error(`${s.tokenizerConfig.path}: ${key} "${text}" is not in the vocabulary of ${s.tokenizerFile}`);
    return id;
  };
  const ids = (file: JsonFile | undefined, key: string, list: boolean): number[] | undefined => {
    const value = file?.json[key];
    if (file === undefined || value === undefined || value === null) return undefined;
    const values = Array.isArray(value) && list ? (value as unknown[]) : [value];
    if (values.length === 0) throw new Error(`${file.path}: ${key} is an empty list`);
    for (const v of values) {
      if (typeof v !== 'number' || !Number.isInteger(v))
        throw new Error(
          `${file.path}: ${key} must be an integer id${list ? ' or a list of them' : ''}, got ${JSON.stringify(value)}`,
        );
      if (v < 0 || v >= s.vocabSize)
        throw new Error(
          `${file.path}: ${key} ${v} is not a token id of ${s.tokenizerFile} (its ids are 0..${s.vocabSize - 1})`,
        );
    }
    return values as number[];
  };
  // Every source is read (and checked) before one is chosen: a bad value is an error even where a file
  // of higher precedence would have won.
  const fromModel = (key: string, list: boolean) => {
    const generation = ids(s.generationConfig, key, list);
    const config = ids(s.modelConfig, key, list);
    return generation ?? config;
  };
  const tokenizer = { eos: tokenId('eos_token'), bos: tokenId('bos_token'), pad: tokenId('pad_token') };
  const model = {
    eos: fromModel('eos_token_id', true),
    bos: fromModel('bos_token_id', false)?.[0],
    pad: fromModel('pad_token_id', false)?.[0],
  };

  const eosIds = [...(model.eos ?? (tokenizer.eos !== undefined ? [tokenizer.eos] : []))];
  if (eosIds.length === 0) {
    const named = FALLBACK_EOS.map((t) => s.tokenToId(t)).find((id) => id !== undefined);
    if (named === undefined)
      throw new Error(
        `${s.tokenizerFile}: no end-of-sequence token: set eos_token in ${s.tokenizerConfig.path} (none of ${FALLBACK_EOS.join(', ')} is in the vocabulary)`,
      );
    eosIds.push(named);
  }
  const eosId = tokenizer.eos ?? eosIds[0]!;
  if (!eosIds.includes(eosId)) eosIds.push(eosId);

  const templateTokens: Record<string, string> = {};
  for (const key of TEMPLATE_TOKEN_KEYS) {
    const text = tokenText(s.tokenizerConfig, key);
    if (text !== undefined) templateTokens[key] = text;
  }
  return {
    eosId,
    eosIds,
    bosId: tokenizer.bos ?? model.bos ?? eosId,
    padId: tokenizer.pad ?? model.pad ?? eosId,
    templateTokens,
  };
}
