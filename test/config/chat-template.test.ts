/**
 * `data.chatTemplate` in the run config and at `train` (preflight): its default, its values, and the
 * checks that belong before a run is recorded (a template that cannot render, cold-start synthesis
 * that would put the teacher's own reasoning in a new user turn).
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseRunConfig } from '../../config/load';
import { preflight } from '../../config/preflight';

const QWEN3_LIKE = join(__dirname, '..', 'fixtures', 'hf-tokenizers', 'qwen3-like');
const TEACHER = join(__dirname, '..', 'fixtures', 'hf', 'qwen3');

/** The tiny preset has 256 positions: prompts up to 64 tokens leave room for the default 64 new tokens. */
const run = (tokenizer: string, data: Record<string, unknown>, rest: Record<string, unknown> = {}) =>
  parseRunConfig(
    stringify({ name: 'chat', model: { preset: 'tiny', tokenizer }, data: { maxPromptTokens: 64, ...data }, ...rest }),
    'chat.yaml',
  );
const config = (data: Record<string, unknown>, rest: Record<string, unknown> = {}) => run(QWEN3_LIKE, data, rest);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chat-config-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('data.chatTemplate', () => {
  it("defaults to 'auto', takes 'none', and refuses anything else naming the key", () => {
    expect(config({}).data.chatTemplate).toBe('auto');
    expect(config({ chatTemplate: 'none' }).data.chatTemplate).toBe('none');
    expect(() => config({ chatTemplate: 'chatml' })).toThrow(/chat\.yaml:\d+: data\.chatTemplate: /);
  });

  it('passes preflight with the fixture template, either way', async () => {
    expect(await preflight(config({}), 'chat.yaml')).toEqual([]);
    expect(await preflight(config({ chatTemplate: 'none' }), 'chat.yaml')).toEqual([]);
  });

  it('a template that fails to render is refused at train, naming data.chatTemplate and the file', async () => {
    const broken = join(dir, 'broken');
    await cp(QWEN3_LIKE, broken, { recursive: true });
    const jinja = join(broken, 'chat_template.jinja');
    await writeFile(jinja, "{{ raise_exception('needs a system message') }}");
    const c = (data: Record<string, unknown>) => run(broken, data);
    const problems = await preflight(c({}), 'chat.yaml');
    expect(problems).toEqual([
      `chat.yaml: data.chatTemplate: ${jinja}: the chat template fails to render a prompt: needs a system message (data.chatTemplate: none leaves the template out)`,
    ]);
    expect(await preflight(c({ chatTemplate: 'none' }), 'chat.yaml')).toEqual([]);
  });

  it('refuses cold-start synthesis with a template (the teacher would not use it), but not with none', async () => {
    const synth = { coldStart: { synthesize: true, teacher: { checkpoint: TEACHER } } };
    const problems = await preflight(config({}, synth), 'chat.yaml');
    expect(problems).toEqual([expect.stringMatching(/^chat\.yaml: coldStart\.synthesize: .*chat_template\.jinja/)]);
    expect(await preflight(config({ chatTemplate: 'none' }, synth), 'chat.yaml')).toEqual([]);
  });
});
