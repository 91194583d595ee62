/**
 * Independent value checks through a run: after a smoke run, everything the pipeline stored is
 * recomputed from the recorded rows and artifacts with the plain functions of opera/ and a fresh
 * float64 forward pass (test/engine/reference.ts: no graph builder, no ONNX Runtime) of the recorded
 * checkpoints, and compared with what was stored:
 * - each sample's OPERA log-probs (after the full response, after `<think>`, after every segment),
 *   with the contexts built here from shared/spec/OPERA.md;
 * - rewards, the EMA sequence across iterations (carried through continue-as-new), advantages;
 * - which training prompts each iteration consumed (the data position);
 * - every metric the README's metrics table lists, by its definition there (and no metric that the
 *   table does not list).
 * A deterministic bug passes any comparison between two runs of the same code; it does not pass these.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint, type Checkpoint } from '../../engine/checkpoint';
import { ByteTokenizer } from '../../engine/tokenizer';
import { grpoAdvantages, policyLoss } from '../../opera/grpo';
import {
  DEFAULT_OPERA_REWARD_OPTIONS,
  keywordMatcher,
  operaRewards,
  reflectionSegments,
  type OperaGroup,
} from '../../opera/reward';
import { syntheticTasks } from '../../opera/synthetic';
import { logSoftmax, referenceForward } from '../engine/reference';
import { ROOT, runCli, runIdOf, smokeYaml, tmpDir, writeConfig, type WorkerProcess, integrationFile } from './helpers';
import { sha256 } from '../../util/canonical';

jest.setTimeout(300_000);

const file = integrationFile('values');
const { env, db, started } = file;
let worker: WorkerProcess;
let runId: string;

// The smoke settings, with one update step per iteration (mini-batch = all 16 rollouts), so the update's
// loss metrics are a plain policyLoss over the batch with logp = the old policy's.
const ITERATIONS = 2;
const PROMPTS = 4;
const GROUP = 4;
const LR = 0.001;
const EVAL_PROMPTS = 4;
const SYNTHETIC = { writing: 12, math: 12 };
const MAX_PROMPT_TOKENS = 64;
// More cold-start steps than the smoke config's 20, so that greedy eval responses have reasoning segments
// with guiding keywords and eval/reflection_useful is recorded (and checked) too.
const SFT_STEPS = 80;

interface SampleRow {
  split: 'train' | 'eval';
  iteration: number;
  prompt_id: string;
  sample_index: number;
  prompt: string;
  reference: string;
  task_type: string;
  response: string;
  response_tokens: number;
  reward: number;
  ppl: number;
  reflection: number;
  reflection_count: number;
  correct: boolean | null;
  advantage: number | null;
  logp_full: number;
  logp_initial: number;
  logp_segments: number[];
}
interface DatasetFile {
  train: { id: string; prompt: string; reference: string; taskType: string }[];
  eval: { id: string; prompt: string; reference: string; taskType: string }[];
}
interface RewardFile {
  sequences: { promptTokens: number[]; tokens: number[]; advantage: number }[];
}

let samples: SampleRow[];
/**
 * The exact response text each sample was scored on, from the rollout/eval artifacts: a row's
 * `response` has NUL replaced by U+FFFD (PostgreSQL text cannot hold NUL; a byte-level model can
 * generate it), so the log-probs are recomputed on the artifact's text, and the row is checked against it.
 */
const exactResponses = new Map<string, string>();
const responseKey = (split: string, iteration: number, promptId: string, sampleIndex: number) =>
  `${split} ${iteration} ${promptId} ${sampleIndex}`;
const exactResponse = (s: SampleRow) =>
  exactResponses.get(responseKey(s.split, s.iteration, s.prompt_id, s.sample_index))!;
let metrics: Map<string, number>; // `${step} ${name}` → value
let dataset: DatasetFile;
const checkpoints = new Map<number, Checkpoint>();
const rewardFiles = new Map<number, RewardFile>();
const tok = new ByteTokenizer();

/** Reads an artifact's file after checking it against its recorded sha256. */
async function artifact(kind: string, iteration: number, name: string): Promise<Buffer> {
  const { rows } = await db.query<{ uri: string; sha256: string }>(
    'select uri, sha256 from artifacts where run_id = $1 and kind = $2 and iteration = $3 and name = $4',
    [runId, kind, iteration, name],
  );
  const row = rows[0];
  if (!row) throw new Error(`no ${kind} artifact ${name} at iteration ${iteration}`);
  const bytes = readFileSync(fileURLToPath(row.uri));
  expect(sha256(bytes)).toBe(row.sha256);
  return bytes;
}

beforeAll(async () => {
  worker = await file.worker();
  const config = writeConfig(
    smokeYaml({
      name: 'values',
      artifacts: tmpDir(),
      data: `{ source: synthetic, synthetic: { writing: ${SYNTHETIC.writing}, math: ${SYNTHETIC.math}, seed: 7 }, evalFraction: 0.25, maxPromptTokens: ${MAX_PROMPT_TOKENS} }`,
      grpo: `{ iterations: ${ITERATIONS}, promptsPerIteration: ${PROMPTS}, groupSize: ${GROUP}, miniBatchSize: ${PROMPTS * GROUP}, lr: ${LR}, maxNewTokens: 48 }`,
    }).replace('steps: 20,', `steps: ${SFT_STEPS},`),
  );
  const res = await runCli(['train', config, '--wait', '--json'], env);
  runId = runIdOf(res.stdout);
  started.push(runId);
  if (res.code !== 0) throw new Error(`train exited ${res.code}\n${res.stderr}\n${worker.output()}`);

  samples = (
    await db.query<SampleRow>(
      'select * from samples where run_id = $1 order by split, iteration, prompt_id, sample_index',
      [runId],
    )
  ).rows;
  const m = (
    await db.query<{ step: number; name: string; value: number }>(
      'select step, name, value from metrics where run_id = $1',
      [runId],
    )
  ).rows;
  metrics = new Map(m.map((r) => [`${r.step} ${r.name}`, r.value]));
  dataset = JSON.parse((await artifact('dataset', 0, 'dataset.json')).toString('utf8')) as DatasetFile;
  for (let i = 0; i <= ITERATIONS; i++) {
    await artifact('checkpoint', i, 'model.safetensors');
    const { rows } = await db.query<{ uri: string }>(
      "select uri from artifacts where run_id = $1 and kind = 'checkpoint' and iteration = $2 and name = 'model.safetensors'",
      [runId, i],
    );
    checkpoints.set(i, await loadCheckpoint(dirname(fileURLToPath(rows[0]!.uri))));
    if (i > 0) {
      rewardFiles.set(i, JSON.parse((await artifact('rewards', i, 'batch.json')).toString('utf8')) as RewardFile);
      for (const shard of [0, 1]) {
        const { items } = JSON.parse((await artifact('scores', i, `shard-${shard}.json`)).toString('utf8')) as {
          items: { promptId: string; samples: { text: string }[] }[];
        };
        for (const item of items)
          item.samples.forEach((x, j) => exactResponses.set(responseKey('train', i, item.promptId, j), x.text));
      }
    }
    const evalFile = JSON.parse((await artifact('eval', i, 'eval.json')).toString('utf8')) as {
      samples: { promptId: string; response: string }[];
    };
    for (const r of evalFile.samples) exactResponses.set(responseKey('eval', i, r.promptId, 0), r.response);
  }
});

const rowsOf = (split: 'train' | 'eval', iteration: number) =>
  samples.filter((s) => s.split === split && s.iteration === iteration);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Log p of each `target` token after `context` (BOS first), by the float64 reference forward. */
function targetLogps(ckpt: Checkpoint, context: number[], target: number[]): number[] {
  const logits = referenceForward(ckpt.config, ckpt.weights, [...context, ...target]);
  return target.map((t, j) => logSoftmax(logits[context.length - 1 + j]!)[t]!);
}
/** OPERA.md's mlp(ctx): the mean log-probability of the reference answer's tokens after `ctx`. */
const mlp = (ckpt: Checkpoint, ctx: string, reference: string) =>
  mean(targetLogps(ckpt, [tok.bosId, ...tok.encode(ctx)], tok.encode(reference)));

/** The contexts of OPERA.md "The reward", written out from the spec (not the pipeline's scoringContexts). */
function specContexts(prompt: string, response: string): { full: string; initial: string; segments: string[] } {
  const segs = reflectionSegments(response);
  return {
    full: prompt + response,
    initial: `${prompt}<think>`,
    segments: segs.map(
      (_, j) =>
        `${prompt}<think>${segs
          .slice(0, j + 1)
          .map((s) => `${s}\n\n`)
          .join('')}`,
    ),
  };
}

function expectLogps(row: SampleRow, ckpt: Checkpoint): void {
  const response = exactResponse(row);
  expect(row.response).toBe(response.replace(/\u0000/g, '\uFFFD'));
  const ctx = specContexts(row.prompt, response);
  const where = `${row.split} sample ${row.prompt_id}/${row.sample_index} at iteration ${row.iteration}`;
  const close = (got: number, want: number, what: string) => {
    if (!(Math.abs(got - want) <= 1e-4))
      throw new Error(`${where}: ${what} is ${got}, a float64 forward gives ${want}`);
  };
  close(row.logp_full, mlp(ckpt, ctx.full, row.reference), 'logp_full (after prompt + response)');
  close(row.logp_initial, mlp(ckpt, ctx.initial, row.reference), 'logp_initial (after prompt + <think>)');
  expect(row.logp_segments).toHaveLength(ctx.segments.length);
  ctx.segments.forEach((c, j) => close(row.logp_segments[j]!, mlp(ckpt, c, row.reference), `logp_segments[${j}]`));
}

test('the run recorded what it should: 2 iterations of 4 × 4 rollouts, evaluation at 0, 1 and 2', () => {
  for (let i = 1; i <= ITERATIONS; i++) expect(rowsOf('train', i)).toHaveLength(PROMPTS * GROUP);
  for (let i = 0; i <= ITERATIONS; i++) expect(rowsOf('eval', i)).toHaveLength(EVAL_PROMPTS);
  // The dataset keeps every distinct source row whose prompt fits, each in exactly one split.
  const fits = distinct.filter((r) => 1 + tok.encode(r.prompt).length <= MAX_PROMPT_TOKENS);
  expect([...dataset.train, ...dataset.eval].map((r) => r.prompt).sort()).toEqual(fits.map((r) => r.prompt).sort());
});

test('each iteration consumed the next promptsPerIteration training prompts (the data position advances, wrapping)', () => {
  for (let i = 1; i <= ITERATIONS; i++) {
    const want = Array.from(
      { length: PROMPTS },
      (_, k) => dataset.train[((i - 1) * PROMPTS + k) % dataset.train.length]!,
    );
    const got = [...new Set(rowsOf('train', i).map((s) => s.prompt_id))].sort();
    expect(got).toEqual(want.map((r) => r.id).sort());
    for (const s of rowsOf('train', i)) {
      const row = want.find((r) => r.id === s.prompt_id)!;
      expect([s.prompt, s.reference, s.task_type]).toEqual([row.prompt, row.reference, row.taskType]);
    }
  }
  // Evaluation always uses the first eval.prompts held-out rows.
  for (let i = 0; i <= ITERATIONS; i++) {
    expect(
      rowsOf('eval', i)
        .map((s) => s.prompt_id)
        .sort(),
    ).toEqual(
      dataset.eval
        .slice(0, EVAL_PROMPTS)
        .map((r) => r.id)
        .sort(),
    );
  }
});

test("every train sample's OPERA log-probs equal a float64 forward of the policy that scored it", () => {
  // Iteration i's rollouts are scored by the policy before its update: checkpoint i − 1.
  for (let i = 1; i <= ITERATIONS; i++) for (const row of rowsOf('train', i)) expectLogps(row, checkpoints.get(i - 1)!);
});

test("every eval sample's log-probs equal a float64 forward of the evaluated checkpoint", () => {
  for (let i = 0; i <= ITERATIONS; i++) for (const row of rowsOf('eval', i)) expectLogps(row, checkpoints.get(i)!);
});

/** Groups of one iteration in batch order (the order the data position gives), members by sample index. */
function batchGroups(i: number): { rows: SampleRow[][]; groups: OperaGroup[] } {
  const ids = Array.from(
    { length: PROMPTS },
    (_, k) => dataset.train[((i - 1) * PROMPTS + k) % dataset.train.length]!.id,
  );
  const rows = ids.map((id) =>
    rowsOf('train', i)
      .filter((s) => s.prompt_id === id)
      .sort((a, b) => a.sample_index - b.sample_index),
  );
  const groups = rows.map((g) => ({
    taskType: g[0]!.task_type,
    reference: g[0]!.reference,
    rollouts: g.map((s) => ({
      response: exactResponse(s),
      logpFull: s.logp_full,
      logpInitial: s.logp_initial,
      logpSegments: s.logp_segments,
    })),
  }));
  return { rows, groups };
}

test('rewards, the EMA sequence across continue-as-new, and advantages equal opera/ recomputed from the rows', () => {
  let ema: number | null = null;
  for (let i = 1; i <= ITERATIONS; i++) {
    const { rows, groups } = batchGroups(i);
    const out = operaRewards(groups, ema);
    ema = out.ema;
    expect(metrics.get(`${i} reward/ema`)).toBeCloseTo(ema!, 12);
    const flat = rows.flat();
    const rewards = out.rewards.flat();
    flat.forEach((s, k) => {
      const r = rewards[k]!;
      expect([s.reward, s.ppl, s.reflection, s.reflection_count, s.correct]).toEqual([
        r.total,
        r.ppl,
        r.reflection,
        r.reflectionCount,
        r.correct ?? null,
      ]);
    });
    const advantages = grpoAdvantages(
      rewards.map((r) => r.total),
      flat.map((s) => s.prompt_id),
    );
    flat.forEach((s, k) => expect(s.advantage).toBeCloseTo(advantages[k]!, 12));
    // The update trained on exactly these sequences and advantages.
    const seqs = rewardFiles.get(i)!.sequences;
    expect(seqs.map((q) => q.advantage)).toEqual(flat.map((s) => s.advantage));
    seqs.forEach((q, k) => {
      expect(q.tokens).toHaveLength(flat[k]!.response_tokens);
      const kept = q.tokens.at(-1) === tok.eosId ? q.tokens.slice(0, -1) : q.tokens;
      expect(tok.decode(kept)).toBe(exactResponse(flat[k]!));
    });
  }
});

test('eval rewards are the OPERA reward of each greedy response alone (group of one, no EMA state)', () => {
  for (let i = 0; i <= ITERATIONS; i++) {
    const rows = rowsOf('eval', i);
    const out = operaRewards(
      rows.map((s) => ({
        taskType: s.task_type,
        reference: s.reference,
        rollouts: [
          {
            response: exactResponse(s),
            logpFull: s.logp_full,
            logpInitial: s.logp_initial,
            logpSegments: s.logp_segments,
          },
        ],
      })),
      null,
    );
    rows.forEach((s, k) => {
      const r = out.rewards[k]![0]!;
      expect([s.reward, s.ppl, s.reflection, s.reflection_count, s.correct, s.advantage]).toEqual([
        r.total,
        r.ppl,
        r.reflection,
        r.reflectionCount,
        r.correct ?? null,
        null,
      ]);
    });
  }
});

/** The update's single step: policyLoss with logp = oldLogp (the weights the step starts from) and the post-SFT reference. */
function updateLoss(i: number) {
  const seqs = rewardFiles.get(i)!.sequences.filter((q) => q.tokens.length > 0);
  const logp = seqs.map((q) => targetLogps(checkpoints.get(i - 1)!, q.promptTokens, q.tokens));
  const refLogp = seqs.map((q) => targetLogps(checkpoints.get(0)!, q.promptTokens, q.tokens));
  return policyLoss({
    logp,
    oldLogp: logp,
    refLogp,
    advantages: seqs.map((q) => q.advantage),
    mask: logp.map((r) => r.map(() => 1)),
  });
}

/** Expected value of each README metric at a step (undefined: not recorded at that step). */
type Checker = (step: number) => { value: number; tolerance: number } | 'engine' | undefined;

const exact = (value: number) => ({ value, tolerance: 1e-12 });
const train = (step: number) => (step >= 1 && step <= ITERATIONS ? rowsOf('train', step) : undefined);
const evals = (step: number) => (rowsOf('eval', step).length ? rowsOf('eval', step) : undefined);
// SFT metrics are recorded at every 5th step and the last.
const sftSteps = [...Array.from({ length: SFT_STEPS / 5 }, (_, k) => 5 * k), SFT_STEPS - 1];
const losses = new Map<number, ReturnType<typeof updateLoss>>();
const loss = (step: number) => {
  if (!losses.has(step)) losses.set(step, updateLoss(step));
  return losses.get(step)!;
};
const onTrain = (f: (rows: SampleRow[]) => number) => (step: number) => {
  const rows = train(step);
  return rows ? exact(f(rows)) : undefined;
};
const onEval = (f: (rows: SampleRow[]) => number | undefined) => (step: number) => {
  const rows = evals(step);
  const v = rows && f(rows);
  return v === undefined ? undefined : exact(v);
};
const maths = (rows: SampleRow[]) => rows.filter((s) => s.task_type === 'math');
const shareOf = (passed: boolean[]) => (passed.length ? mean(passed.map((p) => (p ? 1 : 0))) : undefined);

/** A response's final answer, from OPERA.md: the text after the reasoning, every think block removed. */
const answerOf = (s: SampleRow) =>
  exactResponse(s)
    .replace(/<think>[\s\S]*?<\/think>/g, '')
    .trim();
/**
 * The hidden check, written out from its definition on the synthetic rows (not opera/checkers.ts): math
 * passes when the answer is right (the row's `correct`); writing ("Describe a red fox." → "The red fox
 * is quick.") when the answer's words hold the colour, the animal and the trait (the reference's last
 * word) in that order. The run's data is synthetic, so every eval row has a check.
 */
function passesHiddenCheck(s: SampleRow): boolean {
  if (s.task_type === 'math') return s.correct === true;
  const [, colour, animal] = /^Describe a (\w+) (\w+)\.$/.exec(s.prompt)!;
  const trait = /(\w+)\.$/.exec(s.reference)![1]!;
  const words = answerOf(s)
    .toLowerCase()
    .split(/[^\p{L}\p{N}_]+/u);
  let at = 0;
  for (const w of [colour!, animal!, trait]) {
    at = words.indexOf(w, at) + 1;
    if (at === 0) return false;
  }
  return true;
}

/**
 * eval/reflection_useful: the evaluation's own batch of one-member groups, its EMA = the mean of every
 * value of the batch (OPERA.md: the first batch), each value smoothed with it; a keyword segment is useful
 * when its smoothed log-prob exceeds the previous checkpoint's (the previous segment's, or `<think>`'s).
 */
function reflectionUseful(rows: SampleRow[]): number | undefined {
  // The run's reward section is the default one.
  const { emaMix, keywords, keywordMatch } = DEFAULT_OPERA_REWARD_OPTIONS;
  const hasKeyword = keywordMatcher(keywords, keywordMatch);
  const values = rows.flatMap((s) => [s.logp_full, s.logp_initial, ...s.logp_segments]);
  const ema = mean(values);
  const smooth = (v: number) => (1 - emaMix) * v + emaMix * ema;
  const useful: boolean[] = [];
  for (const s of rows) {
    reflectionSegments(exactResponse(s)).forEach((segment, j) => {
      const previous = j === 0 ? s.logp_initial : s.logp_segments[j - 1]!;
      if (hasKeyword(segment)) useful.push(smooth(s.logp_segments[j]!) > smooth(previous));
    });
  }
  return shareOf(useful);
}

// The synthetic source rows; a duplicate repeats an earlier row's prompt and reference.
const generated = syntheticTasks({ ...SYNTHETIC, seed: 7 });
const distinct = generated.filter(
  (r, k) => generated.findIndex((o) => o.prompt === r.prompt && o.reference === r.reference) === k,
);

const checkers: Record<string, Checker> = {
  'data/train_rows': (step) => (step === 0 ? exact(dataset.train.length) : undefined),
  'data/eval_rows': (step) => (step === 0 ? exact(dataset.eval.length) : undefined),
  'data/duplicates': (step) => (step === 0 ? exact(generated.length - distinct.length) : undefined),
  'data/too_long': (step) =>
    step === 0 ? exact(distinct.filter((r) => 1 + tok.encode(r.prompt).length > MAX_PROMPT_TOKENS).length) : undefined,
  'coldstart/rows': () => undefined, // only with coldStart.synthesize (test/integration/coldstart)
  'sft/loss': (step) => (sftSteps.includes(step) ? 'engine' : undefined),
  'sft/grad_norm': (step) => (sftSteps.includes(step) ? 'engine' : undefined),
  'reward/mean': onTrain((rows) => mean(rows.map((s) => s.reward))),
  'reward/std': onTrain((rows) => Math.sqrt(mean(rows.map((s) => (s.reward - mean(rows.map((r) => r.reward))) ** 2)))),
  'reward/ppl': onTrain((rows) => mean(rows.map((s) => s.ppl))),
  'reward/reflection': onTrain((rows) => mean(rows.map((s) => s.reflection))),
  'reward/reflection_count': onTrain((rows) => mean(rows.map((s) => s.reflection_count))),
  'reward/logp_full': onTrain((rows) => mean(rows.map((s) => s.logp_full))),
  'reward/ema': (step) => (train(step) ? 'engine' : undefined), // the EMA chain is checked in its own test above
  'reward/math_accuracy': (step) => {
    const rows = train(step);
    return rows && maths(rows).length ? exact(mean(maths(rows).map((s) => (s.correct ? 1 : 0)))) : undefined;
  },
  'rollout/response_tokens': onTrain((rows) => mean(rows.map((s) => s.response_tokens))),
  'train/loss': (step) => (train(step) ? { value: loss(step).loss, tolerance: 1e-4 } : undefined),
  'train/pg_loss': (step) => (train(step) ? { value: loss(step).pgLoss, tolerance: 1e-4 } : undefined),
  'train/kl': (step) => (train(step) ? { value: loss(step).klLoss, tolerance: 1e-5 } : undefined),
  'train/clip_fraction': (step) => (train(step) ? { value: loss(step).clipFraction, tolerance: 1e-12 } : undefined),
  'train/grad_norm': (step) => (train(step) ? 'engine' : undefined),
  'train/lr': (step) => (train(step) ? exact(LR) : undefined),
  'train/steps': (step) => (train(step) ? exact(1) : undefined),
  'eval/reward': onEval((rows) => mean(rows.map((s) => s.reward))),
  'eval/ppl': onEval((rows) => mean(rows.map((s) => s.ppl))),
  'eval/reflection': onEval((rows) => mean(rows.map((s) => s.reflection))),
  'eval/ref_logp': onEval((rows) => mean(rows.map((s) => s.logp_full))),
  'eval/exact_match': onEval((rows) =>
    maths(rows).length ? mean(maths(rows).map((s) => (s.correct ? 1 : 0))) : undefined,
  ),
  'eval/response_tokens': onEval((rows) => mean(rows.map((s) => s.response_tokens))),
  'eval/hidden_check': onEval((rows) => shareOf(rows.map(passesHiddenCheck))),
  'eval/reflection_useful': onEval(reflectionUseful),
};

/** The README's per-task-type rows (`eval/<task>/…`): a definition for each task type T of the eval prompts. */
const taskCheckers: Record<string, (type: string) => Checker> = {
  'eval/<task>/hidden_check': (type) => onEval((rows) => shareOf(ofType(rows, type)?.map(passesHiddenCheck) ?? [])),
  'eval/<task>/exact_match': (type) =>
    onEval((rows) => {
      const mine = ofType(rows, type);
      return (
        mine &&
        mean(mine.map((s) => ((type === 'math' ? s.correct === true : answerOf(s) === s.reference.trim()) ? 1 : 0)))
      );
    }),
  'eval/<task>/ref_logp': (type) => onEval((rows) => meanOf(ofType(rows, type), (s) => s.logp_full)),
  'eval/<task>/response_tokens': (type) => onEval((rows) => meanOf(ofType(rows, type), (s) => s.response_tokens)),
  'eval/<task>/segments': (type) => onEval((rows) => meanOf(ofType(rows, type), (s) => s.logp_segments.length)),
  'eval/<task>/opera_reward': (type) => onEval((rows) => meanOf(ofType(rows, type), (s) => s.reward)),
};
/** The rows of one task type, or undefined when there are none (the metric is not recorded then). */
const ofType = (rows: SampleRow[], type: string) => {
  const mine = rows.filter((s) => s.task_type === type);
  return mine.length ? mine : undefined;
};
const meanOf = (rows: SampleRow[] | undefined, f: (s: SampleRow) => number) => rows && mean(rows.map(f));
/** The task types of the evaluated prompts. */
const evalTypes = () => [...new Set(dataset.eval.slice(0, EVAL_PROMPTS).map((r) => r.taskType))].sort();
/** Every concrete metric name with its definition: the task-type patterns expanded. */
const allCheckers = (): Record<string, Checker> => ({
  ...checkers,
  ...Object.fromEntries(
    evalTypes().flatMap((type) =>
      Object.entries(taskCheckers).map(([pattern, f]) => [pattern.replace('<task>', type), f(type)]),
    ),
  ),
});
/** A recorded name as the table lists it: `eval/writing/segments` → `eval/<task>/segments`. */
const listedAs = (name: string) => {
  const parts = name.split('/');
  return parts.length === 3 && parts[0] === 'eval' && evalTypes().includes(parts[1]!)
    ? `eval/<task>/${parts[2]}`
    : name;
};

/** The metric names of the README's "Metrics" table. */
function readmeMetrics(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Metrics'));
  const table = section.slice(0, section.indexOf('\n#', 4));
  return [...table.matchAll(/^\| `([a-z_]+(?:\/<task>)?\/[a-z_]+)` \|/gm)].map((m) => m[1]!);
}

test("the README's metrics table and the recorded metrics name the same set, each with a definition checked here", () => {
  const listed = readmeMetrics();
  expect(listed.length).toBeGreaterThan(20);
  expect(Object.keys({ ...checkers, ...taskCheckers }).sort()).toEqual([...listed].sort());
  const recorded = new Set([...metrics.keys()].map((k) => k.slice(k.indexOf(' ') + 1)));
  for (const name of recorded) expect(listed).toContain(listedAs(name));
  // Everything the table lists is recorded by this run (a pattern row for each task type evaluated),
  // except what only another configuration records.
  expect(evalTypes()).toEqual(['math', 'writing']);
  for (const name of Object.keys(allCheckers()).filter((n) => n !== 'coldstart/rows')) expect(recorded).toContain(name);
});

test('every recorded metric equals its definition over the recorded rows, at exactly the steps it should be recorded', () => {
  const problems: string[] = [];
  const steps = new Set([...metrics.keys()].map((k) => Number(k.split(' ')[0])));
  for (const [name, check] of Object.entries(allCheckers())) {
    for (const step of [...steps, ...sftSteps]) {
      const want = check(step);
      const got = metrics.get(`${step} ${name}`);
      if (want === undefined) {
        if (got !== undefined)
          problems.push(`${name} at step ${step}: recorded ${got}, but it should not be recorded there`);
      } else if (got === undefined) problems.push(`${name} at step ${step}: not recorded`);
      else if (want === 'engine') {
        if (!Number.isFinite(got)) problems.push(`${name} at step ${step}: ${got}`);
      } else if (!(Math.abs(got - want.value) <= want.tolerance))
        problems.push(`${name} at step ${step}: recorded ${got}, its definition gives ${want.value}`);
    }
  }
  expect(problems).toEqual([]);
  // The engine-measured SFT loss fell, and the KL at iteration 1 is 0: the policy still is the reference.
  expect(metrics.get(`${SFT_STEPS - 1} sft/loss`)!).toBeLessThan(metrics.get('0 sft/loss')!);
  expect(Math.abs(metrics.get('1 train/kl')!)).toBeLessThan(1e-6);
  expect(metrics.get('2 train/kl')!).toBeGreaterThan(0);
});
