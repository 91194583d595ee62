/**
 * Stage `evaluate`: one response per held-out prompt (greedy by default), scored like a rollout, so a
 * group has one member (ppl is 1 by definition); the eval sample rows, eval metrics and an eval artifact.
 */
import { join } from 'node:path';
import { inPhase } from '../util/phase';
import { upsertMetrics, upsertSamples } from '../db/queries';
import type { NewSample } from '../db/schema';
import { sample, type SampleOptions } from '../engine/sampler';
import type { RunConfig } from '../config/schema';
import { hiddenCheck } from '../opera/checkers';
import {
  exactMatch,
  keywordMatcher,
  operaRewards,
  reflectionMarks,
  reflectionSegments,
  type OperaReward,
} from '../opera/reward';
import { deriveSeed } from '../util/random';
import { getTokenizer, inferenceModel, promptTokens, scoreResponses, type ScoredResponse } from './engine';
import { mean, pad, type DatasetFile, type Runtime } from './runtime';
import type { DatasetRow } from '../opera/dataset';
import { sampleRow } from './samples';
import { putJson } from './store';
import type { EvalResult, EvalTaskResult, EvaluateInput } from './types';

/** How evaluation samples: `eval.temperature` (0 = greedy, the default) and `eval.maxNewTokens`, no top-k/top-p. */
export const evalSampling = (c: RunConfig): SampleOptions => ({
  temperature: c.eval.temperature,
  topK: 0,
  topP: 1,
  maxNewTokens: c.eval.maxNewTokens,
  seed: c.seed,
});

/** The held-out prompts an evaluation uses: the first `eval.prompts` of the eval split. */
export const evalPrompts = (data: DatasetFile, c: RunConfig): DatasetRow[] => data.eval.slice(0, c.eval.prompts);

/** The metrics an evaluation records at its iteration. */
export function evalMetrics(result: EvalResult): Record<string, number> {
  const metrics: Record<string, number> = {
    'eval/reward': result.reward,
    'eval/ppl': result.ppl,
    'eval/reflection': result.reflection,
    'eval/ref_logp': result.refLogp,
    'eval/response_tokens': result.meanResponseTokens,
  };
  if (result.exactMatch !== null) metrics['eval/exact_match'] = result.exactMatch;
  // `??`: results recorded before these fields existed lack them (verify reads old runs' outputs).
  if ((result.hiddenCheck ?? null) !== null) metrics['eval/hidden_check'] = result.hiddenCheck!;
  if ((result.reflectionUseful ?? null) !== null) metrics['eval/reflection_useful'] = result.reflectionUseful!;
  for (const [type, t] of Object.entries(result.taskTypes ?? {})) {
    if (t.hiddenCheck !== null) metrics[`eval/${type}/hidden_check`] = t.hiddenCheck;
    metrics[`eval/${type}/exact_match`] = t.exactMatch;
    metrics[`eval/${type}/ref_logp`] = t.refLogp;
    metrics[`eval/${type}/response_tokens`] = t.responseTokens;
    metrics[`eval/${type}/segments`] = t.segments;
    metrics[`eval/${type}/opera_reward`] = t.operaReward;
  }
  return metrics;
}

/** One evaluated prompt: the row, the exact response text, its length, scores and OPERA reward. */
export interface EvalItem {
  row: DatasetRow;
  response: string;
  responseTokens: number;
  score: ScoredResponse;
  reward: OperaReward;
}

const share = (passed: boolean[]): number | null => (passed.length ? mean(passed.map((p) => (p ? 1 : 0))) : null);

/**
 * The evaluation's numbers. `ema` is the EMA the evaluation's `operaRewards` call returned (its own batch
 * mean: evaluation starts from no EMA state), so the useful-reflection share counts exactly the segments
 * the reward counted, on the same smoothed values — also for wrong math answers, whose reward drops them.
 */
export function evalResult(
  iteration: number,
  items: EvalItem[],
  ema: number | null,
  options: RunConfig['reward'],
): EvalResult {
  const checks = items.map(({ row, response }) => hiddenCheck(row, response));
  const checked = (of: number[]) => of.flatMap((k) => (checks[k] === null ? [] : [checks[k]!]));
  const byType = new Map<string, number[]>();
  items.forEach(({ row }, k) => byType.set(row.taskType, [...(byType.get(row.taskType) ?? []), k]));
  const taskTypes = Object.fromEntries(
    [...byType].map(([type, of]): [string, EvalTaskResult] => {
      const avg = (f: (item: EvalItem) => number) => mean(of.map((k) => f(items[k]!)));
      return [
        type,
        {
          prompts: of.length,
          hiddenCheck: share(checked(of)),
          exactMatch: avg((i) => (exactMatch(type, i.response, i.row.reference) ? 1 : 0)),
          refLogp: avg((i) => i.score.logpFull),
          responseTokens: avg((i) => i.responseTokens),
          segments: avg((i) => reflectionSegments(i.response).length),
          operaReward: avg((i) => i.reward.total),
        },
      ];
    }),
  );

  // operaRewards step 2: every value smoothed with the batch's EMA.
  const smooth = (v: number) => (1 - options.emaMix) * v + options.emaMix * (ema ?? 0);
  const hasKeyword = keywordMatcher(options.keywords, options.keywordMatch);
  const useful = items.flatMap(({ response, score }) => {
    const segments = reflectionSegments(response);
    const marks = reflectionMarks(segments, smooth(score.logpInitial), score.logpSegments.map(smooth), hasKeyword);
    return segments.flatMap((segment, j) => (hasKeyword(segment) ? [marks[j]!] : []));
  });

  const rewards = items.map((i) => i.reward);
  const maths = items.filter((i) => i.row.taskType === 'math');
  return {
    iteration,
    prompts: items.length,
    reward: mean(rewards.map((r) => r.total)),
    ppl: mean(rewards.map((r) => r.ppl)),
    reflection: mean(rewards.map((r) => r.reflection)),
    refLogp: mean(items.map((i) => i.score.logpFull)),
    exactMatch: share(maths.map((i) => i.reward.correct === true)),
    meanResponseTokens: mean(items.map((i) => i.responseTokens)),
    hiddenCheck: share(checked(items.map((_, k) => k))),
    reflectionUseful: share(useful),
    taskTypes,
  };
}

/** The eval artifact (`eval/iter-NNNN.json`). */
export interface EvalFile {
  result: EvalResult;
  samples: NewSample[];
}

export const evaluateActivities = (rt: Runtime) => ({
  async evaluate(input: EvaluateInput): Promise<EvalResult> {
    const { runId, iteration } = input;
    return rt.stage({ runId, stage: 'evaluate', iteration, shard: 0 }, async () => {
      const config = await rt.runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer, config.data.chatTemplate);
      const model = await inferenceModel(input.checkpoint, await rt.providersFor(config));
      const data = await rt.loadDataset(input.dataset);
      const rows = evalPrompts(data, config);
      const stream = deriveSeed(config.seed, 'evaluate', iteration);
      const results = await inPhase('compute', () =>
        sample(
          model,
          tok,
          rows.map((row, k) => ({ prompt: promptTokens(tok, row.prompt), key: [stream, k] })),
          evalSampling(config),
          (done) => rt.heartbeat({ phase: 'sample', done }),
        ),
      );
      rt.heartbeat({ phase: 'score' });
      const scores = await scoreResponses(
        model,
        tok,
        rows.map((row, k) => ({ prompt: row.prompt, reference: row.reference, response: results[k]!.text })),
      );
      const { rewards, ema } = operaRewards(
        rows.map((row, k) => ({
          taskType: row.taskType,
          reference: row.reference,
          rollouts: [{ response: results[k]!.text, ...scores[k]! }],
        })),
        null,
        config.reward,
      );
      const flat = rewards.map((g) => g[0]!);
      const samples = rows.map((row, k) =>
        sampleRow(
          {
            runId,
            split: 'eval',
            iteration,
            promptId: row.id,
            sampleIndex: 0,
            prompt: row.prompt,
            reference: row.reference,
            taskType: row.taskType,
          },
          results[k]!,
          flat[k]!,
          scores[k]!,
          null,
        ),
      );
      await upsertSamples(rt.db, samples);
      const result = evalResult(
        iteration,
        rows.map((row, k) => ({
          row,
          response: results[k]!.text,
          responseTokens: results[k]!.tokens.length,
          score: scores[k]!,
          reward: flat[k]!,
        })),
        ema,
        config.reward,
      );
      await upsertMetrics(rt.db, runId, iteration, evalMetrics(result));
      await putJson(
        rt.db,
        rt.store(config),
        { runId, kind: 'eval', iteration, name: 'eval.json' },
        join(rt.runDir(config, runId), 'eval', `iter-${pad(iteration)}.json`),
        // The rows as computed (exact response text): `operaflow verify --repair` restores lost ones from here.
        { result, samples } satisfies EvalFile,
      );
      return result;
    });
  },
});
