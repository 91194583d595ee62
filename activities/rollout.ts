/**
 * Stages `rollout` and `score` (queue `rollout`, one activity per shard): G samples for each prompt of
 * the shard's part of the batch, then the OPERA log-probs of every sample (the reference answer's mean
 * log p after the full response, after `<think>` and after every reasoning segment). Both resume after a
 * crash from their partial log: only the prompt in progress is redone.
 */
import { join } from 'node:path';
import { inPhase } from '../util/phase';
import type { RunConfig } from '../config/schema';
import { sample, type SampleOptions, type SampleRequest } from '../engine/sampler';
import type { DatasetRow } from '../opera/dataset';
import { getTokenizer, inferenceModel, promptTokens, scoreResponses, type ScoredResponse } from './engine';
import { mean, pad, type DatasetFile, type Runtime } from './runtime';
import { getJson, putJson } from './store';
import type { RolloutInput, RolloutOutput, ScoreInput, ScoreOutput } from './types';

interface RolloutSample {
  tokens: number[];
  text: string;
  logps: number[];
  finish: string;
}
export interface RolloutItem {
  /** Position in the iteration's batch (0..promptsPerIteration-1); groups are keyed by it. */
  index: number;
  promptId: string;
  prompt: string;
  reference: string;
  taskType: string;
  promptTokens: number[];
  samples: RolloutSample[];
}
export interface ScoredItem extends RolloutItem {
  scores: ScoredResponse[];
}

/** The prompts of an iteration's batch that belong to `shard` (round-robin), with their batch index. */
export function batchPrompts(
  data: DatasetFile,
  config: RunConfig,
  dataPosition: number,
  shard: number,
  shards: number,
): { index: number; row: DatasetRow }[] {
  const out: { index: number; row: DatasetRow }[] = [];
  for (let k = shard; k < config.grpo.promptsPerIteration; k += shards) {
    out.push({ index: k, row: data.train[(dataPosition + k) % data.train.length]! });
  }
  return out;
}

/** How rollouts sample: the `grpo` sampling settings, seeded by the run's seed. */
export const rolloutSampling = (c: RunConfig): SampleOptions => ({
  temperature: c.grpo.temperature,
  topK: c.grpo.topK,
  topP: c.grpo.topP,
  maxNewTokens: c.grpo.maxNewTokens,
  seed: c.seed,
});

/**
 * The G requests for one prompt. Keyed by (iteration, position in the data stream, sample), so a
 * sample is the same on any shard, worker or retry.
 */
export function rolloutRequests(
  config: RunConfig,
  prompt: number[],
  iteration: number,
  position: number,
): SampleRequest[] {
  return Array.from({ length: config.grpo.groupSize }, (_, j) => ({ prompt, key: [iteration, position, j] }));
}

export const rolloutActivities = (rt: Runtime) => ({
  async rollout(input: RolloutInput): Promise<RolloutOutput> {
    const { runId, iteration, shard } = input;
    return rt.stage({ runId, stage: 'rollout', iteration, shard }, async () => {
      const config = await rt.runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer, config.data.chatTemplate);
      const model = await inferenceModel(input.checkpoint, await rt.providersFor(config));
      const data = await rt.loadDataset(input.dataset);
      const prompts = batchPrompts(data, config, input.dataPosition, shard, input.shards);
      const dir = join(rt.runDir(config, runId), 'rollouts', `iter-${pad(iteration)}`);
      const log = await rt.openPartialLog<RolloutItem>(dir, shard);
      for (const { index, row } of prompts.slice(log.items.length)) {
        const p = promptTokens(tok, row.prompt);
        const requests = rolloutRequests(config, p, iteration, input.dataPosition + index);
        const results = await inPhase('compute', () => sample(model, tok, requests, rolloutSampling(config)));
        await log.append({
          index,
          promptId: row.id,
          prompt: row.prompt,
          reference: row.reference,
          taskType: row.taskType,
          promptTokens: p,
          samples: results.map((r) => ({ tokens: r.tokens, text: r.text, logps: r.logps, finish: r.finish })),
        });
      }
      const items = log.items;
      const artifact = await putJson(
        rt.db,
        rt.store(config),
        { runId, kind: 'rollouts', iteration, name: `shard-${shard}.json` },
        join(dir, `shard-${shard}.json`),
        { iteration, shard, items },
      );
      await log.remove();
      const lengths = items.flatMap((it) => it.samples.map((s) => s.tokens.length));
      return { artifact, prompts: items.length, samples: lengths.length, meanResponseTokens: mean(lengths) };
    });
  },

  async score(input: ScoreInput): Promise<ScoreOutput> {
    const { runId, iteration, shard } = input;
    return rt.stage({ runId, stage: 'score', iteration, shard }, async () => {
      const config = await rt.runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer, config.data.chatTemplate);
      const model = await inferenceModel(input.checkpoint, await rt.providersFor(config));
      const { items } = await getJson<{ items: RolloutItem[] }>(input.rollout.artifact);
      const dir = join(rt.runDir(config, runId), 'scores', `iter-${pad(iteration)}`);
      const log = await rt.openPartialLog<ScoredResponse[]>(dir, shard);
      for (const item of items.slice(log.items.length)) {
        await log.append(
          await scoreResponses(
            model,
            tok,
            item.samples.map((s) => ({ prompt: item.prompt, reference: item.reference, response: s.text })),
          ),
        );
      }
      const scored: ScoredItem[] = items.map((item, k) => ({ ...item, scores: log.items[k]! }));
      const artifact = await putJson(
        rt.db,
        rt.store(config),
        { runId, kind: 'scores', iteration, name: `shard-${shard}.json` },
        join(dir, `shard-${shard}.json`),
        { iteration, shard, items: scored },
      );
      await log.remove();
      return { artifact, samples: scored.reduce((n, it) => n + it.samples.length, 0) };
    });
  },
});
