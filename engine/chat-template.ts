/**
 * Chat templates of Hugging Face models: the Jinja template a model's tokenizer ships, rendered with
 * @huggingface/jinja the way transformers' `apply_chat_template` renders it, for one user turn and the
 * assistant's generation prompt.
 *
 * Where a template is found mirrors transformers 5 (`tokenization_utils_base.py`,
 * `_from_pretrained`): a `chat_template.jinja` beside tokenizer.json takes priority over
 * `tokenizer_config.json`'s `chat_template`, which is a string or a list of `{name, template}` (the
 * one named "default" is used: OPERA passes no tools).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';

/** Run-config values of `data.chatTemplate`: use the model's template when it has one, or never. */
export const CHAT_TEMPLATE_MODES = ['auto', 'none'] as const;
export type ChatTemplateMode = (typeof CHAT_TEMPLATE_MODES)[number];

export interface ChatTemplate {
  /** The file (and key) the template came from, for error messages. */
  readonly source: string;
  /** The prompt as one user message, followed by the assistant's generation prompt. */
  render(prompt: string): string;
}

/**
 * The names transformers passes to a template besides the messages (its `special_tokens_map`): a
 * template writes e.g. `{{ bos_token }}` itself, which is why a templated prompt gets no extra BOS.
 */
export const TEMPLATE_TOKEN_KEYS = [
  'bos_token',
  'eos_token',
  'unk_token',
  'sep_token',
  'pad_token',
  'cls_token',
  'mask_token',
] as const;

/** A prompt that any template must copy into its output; checked once at load, so a bad template fails `train`. */
const PROBE = 'Describe a red fox.';

/**
 * Compiles a template and renders PROBE once: a template that does not parse, raises, or drops the
 * user's text (one that expects content as a list of parts, say) is refused here, naming `source`.
 */
export function compileChatTemplate(text: string, source: string, tokens: Record<string, string>): ChatTemplate {
  let template: Template;
  try {
    template = new Template(text);
  } catch (err) {
    throw new Error(`${source}: the chat template does not parse: ${(err as Error).message}`);
  }
  const render = (prompt: string): string => {
    try {
      // As transformers: tools and documents are None; enable_thinking because OPERA scores the
      // model's <think> segments (Qwen3's template otherwise closes an empty think block up front).
      return template.render({
        ...tokens,
        messages: [{ role: 'user', content: prompt }],
        tools: null,
        documents: null,
        add_generation_prompt: true,
        enable_thinking: true,
      });
    } catch (err) {
      throw new Error(`${source}: the chat template fails to render a prompt: ${(err as Error).message}`);
    }
  };
  const probe = render(PROBE);
  if (!probe.includes(PROBE))
    throw new Error(
      `${source}: the chat template does not copy a user message's text into its output (rendered ${JSON.stringify(probe.slice(0, 200))})`,
    );
  return { source, render };
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * The template text of the tokenizer in `dir` and where it came from, or undefined when it has none.
 * `config` is its parsed tokenizer_config.json (`{}` when absent).
 */
export async function findChatTemplate(
  dir: string,
  configPath: string,
  config: Record<string, unknown>,
): Promise<{ text: string; source: string } | undefined> {
  const jinjaPath = join(dir, 'chat_template.jinja');
  const jinja = await readIfPresent(jinjaPath);
  if (jinja !== undefined) return { text: jinja, source: jinjaPath };
  const value = config.chat_template;
  if (value === undefined || value === null) return undefined;
  const source = `${configPath} chat_template`;
  if (typeof value === 'string') return { text: value, source };
  if (Array.isArray(value)) {
    const named = value.find(
      (t): t is { name: string; template: string } =>
        t !== null && typeof t === 'object' && t.name === 'default' && typeof t.template === 'string',
    );
    if (named) return { text: named.template, source: `${source} "default"` };
    const names = value.map((t: unknown) => JSON.stringify((t as { name?: unknown } | null)?.name));
    throw new Error(`${source}: a list of templates (${names.join(', ')}) with none named "default"`);
  }
  throw new Error(`${source}: expected a string or a list of {name, template}, got ${JSON.stringify(value)}`);
}
