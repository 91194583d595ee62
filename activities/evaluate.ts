/**
 * Stage `evaluate`: one response per held-out prompt (greedy by default), scored like a rollout, so a
 * group has one member (ppl is 1 by definition); the eval sample rows, eval metrics and an eval artifact.
 */
import { join } from 'node:path';
import { upsertMetrics, upsertSamples } from '../db/queries';
import type { NewSample } from '../db/schema';
import { sample, type SampleOptions } from '../engine/sampler';
import type { RunConfig } from '../config/schema';
import { operaRewards } from '../opera/reward';
import { deriveSeed } from '../util/random';
import { getTokenizer, inferenceModel, promptTokens, scoreResponses } from './engine';
import { mean, pad, type DatasetFile, type Runtime } from './runtime';
import type { DatasetRow } from '../opera/dataset';
import { sampleRow } from './samples';
import { putJson } from './store';
import type { EvalResult, EvaluateInput } from './types';

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
  return metrics;
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
      const model = await inferenceModel(input.checkpoint, config.runtime.providers);
      const data = await rt.loadDataset(input.dataset);
      const rows = evalPrompts(data, config);
      const stream = deriveSeed(config.seed, 'evaluate', iteration);
      const results = await sample(
        model,
        tok,
        rows.map((row, k) => ({ prompt: promptTokens(tok, row.prompt), key: [stream, k] })),
        evalSampling(config),
        (done) => rt.heartbeat({ phase: 'sample', done }),
      );
      rt.heartbeat({ phase: 'score' });
      const scores = await scoreResponses(
        model,
        tok,
        rows.map((row, k) => ({ prompt: row.prompt, reference: row.reference, response: results[k]!.text })),
      );
      const { rewards } = operaRewards(
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
      const math = rows.map((row, k) => ({ row, k })).filter(({ row }) => row.taskType === 'math');
      const result: EvalResult = {
        iteration,
        prompts: rows.length,
        reward: mean(flat.map((r) => r.total)),
        ppl: mean(flat.map((r) => r.ppl)),
        reflection: mean(flat.map((r) => r.reflection)),
        refLogp: mean(scores.map((s) => s.logpFull)),
        exactMatch: math.length ? mean(math.map(({ k }) => (flat[k]!.correct ? 1 : 0))) : null,
        meanResponseTokens: mean(results.map((r) => r.tokens.length)),
      };
      await upsertMetrics(rt.db, runId, iteration, evalMetrics(result));
      await putJson(
        rt.db,
        { runId, kind: 'eval', iteration, name: 'eval.json' },
        join(rt.runDir(config, runId), 'eval', `iter-${pad(iteration)}.json`),
        // The rows as computed (exact response text): `operaflow verify --repair` restores lost ones from here.
        { result, samples } satisfies EvalFile,
      );
      return result;
    });
  },
});
