/**
 * Every key the run config accepts takes effect: this test walks the schema (config/schema.ts) to its
 * leaves, and for each key changes it from the baseline and shows that what the run does changes —
 * through the functions the stage activities themselves call (the dataset stage, the model a run builds,
 * the SFT and GRPO update loops on a real tiny model, rollout and eval sampling, the OPERA reward, the
 * workflow plan, the artifact store) — or that the changed config is refused, naming the key. A key
 * added to the schema without a probe here fails the test; so does one that validates and does nothing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { evalPrompts, evalSampling } from '../../activities/evaluate';
import { getTokenizer, promptTokens } from '../../activities/engine';
import { batchPrompts, rolloutRequests, rolloutSampling } from '../../activities/rollout';
import { attemptsExhausted, runDirOf, type DatasetFile } from '../../activities/runtime';
import { coldStartRuns, engineTeacher, sftExamples, sftLoop, startingWeights, teacherFor } from '../../activities/sft';
import { updateLoop } from '../../activities/update';
import { prepareDataset } from '../../config/dataset';
import { parseRunConfig } from '../../config/load';
import { modelConfigFor } from '../../config/model';
import { runConfigSchema, type RunConfig } from '../../config/schema';
import { saveCheckpoint } from '../../engine/checkpoint';
import { modelPresets } from '../../engine/config';
import { LlamaModel, initWeights } from '../../engine/model';
import { sample } from '../../engine/sampler';
import { ByteTokenizer, tokenizerFromSpec } from '../../engine/tokenizer';
import { Trainer } from '../../engine/trainer';
import { synthesizeRows } from '../../opera/coldstart';
import { rewardsByKind } from '../../opera/reward-kinds';
import { coldStartSet } from '../../opera/synthetic';
import { sha256 } from '../../util/canonical';
import { planOf } from '../../scripts/cli/plan';
import { runSlug } from '../../scripts/cli/train';
import { tinyBpeTokenizerJson } from '../engine/helpers';

jest.setTimeout(300_000);

const dir = mkdtempSync(join(tmpdir(), 'operaflow-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const byte = new ByteTokenizer();
const QWEN3_LIKE = join(__dirname, '..', 'fixtures', 'hf-tokenizers', 'qwen3-like');

const GUIDING = Array.from({ length: 47 }, (_, k) => String.fromCharCode(33 + 2 * k));

/** A cheap baseline: defaults everywhere except what would make the probes slow (model size, step counts). */
const BASE = {
  name: 'walk',
  model: { preset: 'tiny' },
  data: { synthetic: { writing: 8, math: 8 } },
  // Guiding words the random tiny teacher often writes (printable ASCII), so its reflection steps run.
  coldStart: { steps: 3, batchSize: 4, warmupSteps: 2, teacher: { guidingWords: GUIDING, maxStepTokens: 24 } },
  grpo: { epochs: 2, miniBatchSize: 4, lr: 0.05, maxNewTokens: 16 },
  eval: { prompts: 2, maxNewTokens: 16 },
};

function configWith(path: string[], value: unknown): RunConfig {
  const raw = structuredClone(BASE) as Record<string, unknown>;
  let node = raw;
  for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
  node[path.at(-1)!] = value;
  return parseRunConfig(stringify(raw), 'walk.yaml');
}

/** sha256 of a value's JSON, typed arrays and maps included (duck-typed: engine outputs may come from another realm under jest). */
const digest = (x: unknown) =>
  sha256(
    JSON.stringify(x, (_, v: unknown) =>
      ArrayBuffer.isView(v)
        ? Array.from(v as Float32Array)
        : Object.prototype.toString.call(v) === '[object Map]'
          ? [...(v as Map<unknown, unknown>).entries()]
          : v,
    ),
  );

// ---------------------------------------------------------------- what a run does, per stage

async function datasetOf(c: RunConfig): Promise<DatasetFile> {
  const tok = await tokenizerFromSpec(c.model.tokenizer);
  const d = await prepareDataset(c.data, c.seed, { promptTokens: (p) => promptTokens(tok, p).length });
  return { hash: d.hash, train: d.train, eval: d.eval };
}

async function modelOf(c: RunConfig): Promise<LlamaModel> {
  const tok = await tokenizerFromSpec(c.model.tokenizer);
  const config = modelConfigFor(c, tok);
  return new LlamaModel(config, await startingWeights(c, config), { providers: c.runtime.providers });
}

const observe = {
  data: async (c: RunConfig) => digest(await datasetOf(c)),
  model: async (c: RunConfig) =>
    digest([modelConfigFor(c, await tokenizerFromSpec(c.model.tokenizer)), (await modelOf(c)).weights]),
  name: async (c: RunConfig) => runSlug(c.name),
  sft: async (c: RunConfig) => {
    if (!coldStartRuns(c.coldStart)) return 'no cold-start SFT';
    const model = await modelOf(c);
    const examples = sftExamples(
      coldStartSet((await datasetOf(c)).train, c.seed),
      await tokenizerFromSpec(c.model.tokenizer),
    );
    await new Trainer(model, { weightDecay: c.coldStart.weightDecay }).train(sftLoop(c.coldStart, c.seed, examples));
    return digest(model.weights);
  },
  teacher: async (c: RunConfig) => {
    const model = await modelOf(c);
    const { teacher, options } = await teacherFor(c, model.config, model.weights, c.runtime.providers);
    const rows = (await datasetOf(c)).train.slice(0, 1);
    const out = [];
    for await (const row of synthesizeRows(
      rows,
      engineTeacher(teacher, byte, c.seed),
      { ...options, maxReflections: Math.min(options.maxReflections, 2) },
      [1],
    ))
      out.push(row.output);
    return digest(out);
  },
  rollout: async (c: RunConfig) => {
    const model = await modelOf(c);
    const data = await datasetOf(c);
    const prompts = batchPrompts(data, c, 0, 0, c.runtime.rolloutShards);
    const tok = await tokenizerFromSpec(c.model.tokenizer);
    const p = promptTokens(tok, prompts[0]!.row.prompt);
    const results = await sample(model, tok, rolloutRequests(c, p, 1, prompts[0]!.index), rolloutSampling(c));
    return digest([prompts.map((x) => x.row.id), results.map((r) => r.tokens)]);
  },
  update: async (c: RunConfig) => {
    // Sequences with advantages of both signs; the reference differs from the policy, so the KL term acts.
    const policy = await modelOf(c);
    const reference = new LlamaModel(policy.config, initWeights(policy.config, 99));
    const seqs = Array.from({ length: 8 }, (_, k) => ({
      tokens: [byte.bosId, ...byte.encode(`Describe ${k}: a ${'very '.repeat(k)}red fox.`)],
      start: 5,
      advantage: [1.2, -0.8, 0.4, -1.5][k % 4]!,
    }));
    const oldLogp = await policy.tokenLogps(seqs);
    const refLogp = await reference.tokenLogps(seqs);
    const sequences = seqs.map((s, k) => ({
      tokens: s.tokens,
      responseStart: s.start,
      advantage: s.advantage,
      oldLogp: oldLogp[k]!,
      refLogp: refLogp[k]!,
    }));
    const stats: number[] = [];
    await new Trainer(policy).train({
      ...updateLoop(c.grpo, c.seed, 1, sequences),
      onStep: (_, out) => void stats.push(out.loss, out.metrics.clipFraction!),
    });
    return digest([policy.weights, stats]);
  },
  reward: async (c: RunConfig) => {
    const group = (reference: string, taskType: string) => ({
      taskType,
      reference,
      rollouts: [
        {
          response: '<think>Hmm, a fox.\n\nBut it is red.\n\nThe button is blue.</think>The fox is red.',
          logpFull: -2,
          logpInitial: -3,
          logpSegments: [-2.5, -2.2, -1.9],
          probFull: 0.2,
        },
        {
          response: '<think>A fox.\n\nwait, however it is quick.\n\nAbout it.</think>\\boxed{4}',
          logpFull: -1.5,
          logpInitial: -2.8,
          logpSegments: [-2.9, -2.1, -2.0],
          probFull: 0.3,
        },
        { response: 'no reasoning, \\boxed{5}', logpFull: -2.5, logpInitial: -3.1, logpSegments: [], probFull: 0.1 },
      ],
    });
    return digest(
      rewardsByKind(c.reward.kind, [group('The fox is red.', 'writing'), group('4', 'math')], -2, c.reward),
    );
  },
  evaluation: async (c: RunConfig) => {
    const model = await modelOf(c);
    const rows = evalPrompts(await datasetOf(c), c);
    const results = await sample(
      model,
      byte,
      rows.map((row, k) => ({ prompt: promptTokens(byte, row.prompt), key: [7, k] })),
      evalSampling(c),
    );
    return digest(results.map((r) => r.tokens));
  },
  // The byte tokenizer has no chat template, so data.chatTemplate is seen through a model that has one: the
  // rollout prompt of the run's first training row with the Qwen3-like fixture as model.tokenizer.
  templatedPrompt: async (c: RunConfig) => {
    const row = (await datasetOf(c)).train[0]!;
    return digest(promptTokens(await getTokenizer(QWEN3_LIKE, c.data.chatTemplate), row.prompt));
  },
  plan: async (c: RunConfig) => digest(planOf(c)),
  attempts: async (c: RunConfig) => digest([1, 2, 3, 5, 8].map((failures) => attemptsExhausted(c, failures))),
  store: async (c: RunConfig) => runDirOf(c, 'run-1'),
  providers: async (c: RunConfig) => {
    try {
      await (await modelOf(c)).tokenLogps([{ tokens: [1, 2], start: 1 }]);
      return 'ran';
    } catch (err) {
      return (err as Error).message;
    }
  },
};
type Observable = keyof typeof observe;

// ---------------------------------------------------------------- the probe of every key

interface Probe {
  /** The value the key changes to. */
  value: unknown;
  /** What changes in the run, or 'refused' when the changed config must fail validation naming the key. */
  effect: Observable | Observable[] | 'refused';
}

const checkpointDir = (seed: number) => {
  const path = join(dir, `ckpt-${seed}`);
  return saveCheckpoint(path, { config: modelPresets.tiny, weights: initWeights(modelPresets.tiny, seed) }).then(
    () => path,
  );
};

let probes: Record<string, Probe>;

beforeAll(async () => {
  const rows = join(dir, 'rows.jsonl');
  writeFileSync(
    rows,
    ['fox', 'owl', 'cat', 'bee', 'elk', 'yak']
      .map((a, k) => JSON.stringify({ prompt: `Describe a ${a}.`, reference: `The ${a} is ${k}.` }))
      .join('\n'),
  );
  const tokenizer = join(dir, 'tokenizer.json');
  writeFileSync(tokenizer, JSON.stringify(tinyBpeTokenizerJson()));
  probes = {
    name: { value: 'Another Run', effect: 'name' },
    seed: { value: 5, effect: ['data', 'model', 'sft'] },
    'model.preset': { value: 'demo', effect: 'model' },
    'model.checkpoint': { value: await checkpointDir(11), effect: 'model' },
    'model.tokenizer': { value: tokenizer, effect: 'rollout' },
    'model.config.hidden_size': { value: 48, effect: 'model' },
    'model.config.intermediate_size': { value: 80, effect: 'model' },
    'model.config.num_hidden_layers': { value: 3, effect: 'model' },
    'model.config.num_attention_heads': { value: 2, effect: 'model' },
    'model.config.num_key_value_heads': { value: 4, effect: 'model' },
    'model.config.rms_norm_eps': { value: 1e-6, effect: 'model' },
    'model.config.rope_theta': { value: 500000, effect: 'model' },
    'model.config.vocab_size': { value: 300, effect: 'model' },
    'model.config.tie_word_embeddings': { value: true, effect: 'model' },
    'model.config.max_position_embeddings': { value: 512, effect: 'model' },
    'model.lora.rank': { value: 4, effect: ['model', 'sft'] },
    'model.lora.alpha': { value: 32, effect: 'sft' },
    'model.lora.dropout': { value: 0.1, effect: 'refused' }, // not implemented
    'model.lora.targetModules': { value: ['q_proj', 'down_proj'], effect: ['model', 'sft'] },
    'data.source': { value: rows, effect: 'data' },
    'data.synthetic.writing': { value: 10, effect: 'data' },
    'data.synthetic.math': { value: 10, effect: 'data' },
    'data.synthetic.seed': { value: 3, effect: 'data' },
    'data.evalFraction': { value: 0.5, effect: 'data' },
    'data.maxPromptTokens': { value: 13, effect: 'data' },
    'data.chatTemplate': { value: 'none', effect: 'templatedPrompt' },
    'coldStart.enabled': { value: false, effect: 'sft' },
    'coldStart.synthesize': { value: true, effect: 'refused' }, // without a trained teacher
    'coldStart.teacher.checkpoint': { value: await checkpointDir(12), effect: 'teacher' },
    'coldStart.teacher.temperature': { value: 1.5, effect: 'teacher' },
    'coldStart.teacher.topP': { value: 0.5, effect: 'teacher' },
    'coldStart.teacher.topK': { value: 2, effect: 'teacher' },
    'coldStart.teacher.candidates': { value: 1, effect: 'teacher' },
    'coldStart.teacher.maxReflections': { value: 0, effect: 'teacher' },
    'coldStart.teacher.maxStepTokens': { value: 5, effect: 'teacher' },
    'coldStart.teacher.guidingWords': { value: GUIDING.slice(0, 20), effect: 'teacher' },
    'coldStart.steps': { value: 2, effect: 'sft' },
    'coldStart.batchSize': { value: 2, effect: 'sft' },
    'coldStart.lr': { value: 0.01, effect: 'sft' },
    'coldStart.warmupSteps': { value: 0, effect: 'sft' },
    'coldStart.weightDecay': { value: 0.5, effect: 'sft' },
    'grpo.iterations': { value: 7, effect: 'plan' },
    'grpo.promptsPerIteration': { value: 3, effect: 'rollout' },
    'grpo.groupSize': { value: 2, effect: 'rollout' },
    'grpo.miniBatchSize': { value: 3, effect: 'update' },
    'grpo.epochs': { value: 1, effect: 'update' },
    'grpo.lr': { value: 0.01, effect: 'update' },
    'grpo.warmupSteps': { value: 3, effect: 'update' },
    'grpo.klCoef': { value: 0.5, effect: 'update' },
    'grpo.clip': { value: 0.05, effect: 'update' },
    'grpo.clipLow': { value: 0.01, effect: 'update' },
    'grpo.clipHigh': { value: 0.01, effect: 'update' },
    'grpo.dualClip': { value: 1.01, effect: 'update' },
    'grpo.aggregation': { value: 'seq-mean-token-mean', effect: 'update' },
    'grpo.temperature': { value: 0.3, effect: 'rollout' },
    'grpo.topP': { value: 0.3, effect: 'rollout' },
    'grpo.topK': { value: 1, effect: 'rollout' },
    'grpo.maxNewTokens': { value: 8, effect: 'rollout' },
    'reward.kind': { value: 'likelihood', effect: 'reward' },
    'reward.pplWeight': { value: 0.5, effect: 'reward' },
    'reward.reflectionWeight': { value: 0.5, effect: 'reward' },
    'reward.emaAlpha': { value: 0.5, effect: 'reward' },
    'reward.emaMix': { value: 1, effect: 'reward' }, // any mix < 1 shifts all values alike: ranks and signs stay
    'reward.keywords': { value: ['Hmm'], effect: 'reward' },
    'reward.keywordMatch': { value: 'substring', effect: 'reward' },
    'eval.every': { value: 1, effect: 'plan' },
    'eval.prompts': { value: 1, effect: 'evaluation' },
    'eval.maxNewTokens': { value: 4, effect: 'evaluation' },
    'eval.temperature': { value: 1, effect: 'evaluation' },
    'runtime.rolloutShards': { value: 3, effect: ['plan', 'rollout'] },
    'runtime.continueAsNewEvery': { value: 1, effect: 'plan' },
    'runtime.artifacts': { value: '/srv/artifacts', effect: 'store' },
    'runtime.providers': { value: ['cuda', 'cpu'], effect: 'providers' },
    'runtime.maxStageAttempts': { value: 9, effect: 'attempts' },
  };
});

/** The leaf keys of a zod schema, as dotted paths (objects are walked through defaults and optionals). */
function leafKeys(schema: unknown, prefix: string[] = []): string[] {
  const def = (
    schema as { _zod: { def: { type: string; innerType?: unknown; out?: unknown; shape?: Record<string, unknown> } } }
  )._zod.def;
  if (['default', 'prefault', 'optional', 'nullable'].includes(def.type)) return leafKeys(def.innerType, prefix);
  if (def.type === 'pipe') return leafKeys(def.out, prefix); // z.preprocess: the keys are those of its output
  if (def.type === 'object') return Object.entries(def.shape!).flatMap(([k, v]) => leafKeys(v, [...prefix, k]));
  return [prefix.join('.')];
}

test('every key of the run config has a probe here, and every probe names a key', () => {
  const keys = leafKeys(runConfigSchema);
  expect(keys.length).toBeGreaterThan(60);
  expect(Object.keys(probes).sort()).toEqual([...keys].sort());
});

test('each key changed from the baseline changes what the run does, or is refused naming the key', async () => {
  const base = parseRunConfig(stringify(BASE), 'walk.yaml');
  const baseline = new Map<Observable, Promise<unknown>>();
  const seen = (o: Observable) => baseline.get(o) ?? baseline.set(o, observe[o](base)).get(o)!;
  const problems: string[] = [];
  for (const [key, probe] of Object.entries(probes)) {
    const path = key.split('.');
    if (probe.effect === 'refused') {
      expect(() => configWith(path, probe.value)).toThrow(
        new RegExp(`walk\\.yaml:\\d+: ${key.replace(/\./g, '\\.')}: `),
      );
      continue;
    }
    const changed = configWith(path, probe.value);
    const got = path.reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], changed);
    expect(got).toEqual(probe.value); // the value reached the parsed config
    for (const o of [probe.effect].flat()) {
      if ((await observe[o](changed)) === (await seen(o)))
        problems.push(`${key}: ${JSON.stringify(probe.value)} leaves the ${o} unchanged`);
    }
  }
  expect(problems).toEqual([]);
});
