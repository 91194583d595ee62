/**
 * Everything about a run that can be checked from its config and the files it names, checked by `train`
 * before the run is recorded: a problem found here is an error naming the key (and the file and line of
 * a bad dataset row), not a worker failing later and the run blocking on something no retry can fix.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseHfConfig } from '../engine/checkpoint';
import { modelPresets } from '../engine/config';
import { checkProviders } from '../engine/ort';
import { promptTokens, tokenizerFromSpec, type Tokenizer } from '../engine/tokenizer';
import { coldStartSet } from '../opera/synthetic';
import { prepareDataset } from './dataset';
import { modelConfigFor } from './model';
import type { RunConfig } from './schema';

/** Limits that zod cannot see because they span sections: every sequence must fit the model's positions. */
function fits(config: RunConfig): string[] {
  const maxPositions =
    config.model.config?.max_position_embeddings ?? modelPresets[config.model.preset].max_position_embeddings;
  const problems: string[] = [];
  for (const [key, newTokens] of [
    ['grpo.maxNewTokens', config.grpo.maxNewTokens],
    ['eval.maxNewTokens', config.eval.maxNewTokens],
  ] as const) {
    // +1: the BOS token in front of every prompt.
    if (config.data.maxPromptTokens + 1 + newTokens > maxPositions) {
      problems.push(
        `${key}: data.maxPromptTokens (${config.data.maxPromptTokens}) + 1 + ${key} (${newTokens}) exceeds the model's max_position_embeddings (${maxPositions}); lower them or raise model.config.max_position_embeddings`,
      );
    }
  }
  if (config.grpo.promptsPerIteration < config.runtime.rolloutShards) {
    problems.push(
      `runtime.rolloutShards: ${config.runtime.rolloutShards} shards for ${config.grpo.promptsPerIteration} prompts per iteration would leave shards empty; use at most grpo.promptsPerIteration`,
    );
  }
  return problems;
}

/** A checkpoint directory's config.json, parsed as the engine will (without reading the weights). */
async function checkpointProblem(key: string, dir: string): Promise<string | undefined> {
  const file = join(dir, 'config.json');
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? 'not valid JSON';
    return `${key}: cannot read ${file} (${why})`;
  }
  try {
    parseHfConfig(raw as Record<string, unknown>, file);
    return undefined;
  } catch (err) {
    return `${key}: ${(err as Error).message}`;
  }
}

/**
 * The problems of a run config whose paths are already absolute, each naming its key; [] when the run
 * can start. `file` prefixes every line.
 */
export async function preflight(config: RunConfig, file: string): Promise<string[]> {
  const problems = fits(config);
  try {
    checkProviders(config.runtime.providers);
  } catch (err) {
    problems.push(`runtime.providers: ${(err as Error).message}`);
  }
  for (const [key, dir] of [
    ['model.checkpoint', config.model.checkpoint],
    ['coldStart.teacher.checkpoint', config.coldStart.teacher.checkpoint],
  ] as const) {
    const problem = dir === undefined ? undefined : await checkpointProblem(key, dir);
    if (problem) problems.push(problem);
  }
  let tok: Tokenizer | undefined;
  try {
    tok = await tokenizerFromSpec(config.model.tokenizer, config.data.chatTemplate);
  } catch (err) {
    // A tokenizer that loads without its chat template has a bad template, not a bad tokenizer.
    const withoutTemplate = await tokenizerFromSpec(config.model.tokenizer, 'none').then(
      () => true,
      () => false,
    );
    problems.push(
      withoutTemplate && config.data.chatTemplate !== 'none'
        ? `data.chatTemplate: ${(err as Error).message} (data.chatTemplate: none leaves the template out)`
        : `model.tokenizer: ${(err as Error).message}`,
    );
  }
  if (tok) {
    const vocab = config.model.config?.vocab_size;
    if (vocab !== undefined && vocab < tok.vocabSize) {
      problems.push(`model.config.vocab_size: ${vocab} is smaller than the tokenizer's ${tok.vocabSize} tokens`);
    }
    try {
      modelConfigFor(config, tok);
    } catch (err) {
      problems.push((err as Error).message);
    }
    const cs = config.coldStart;
    // The teacher (activities/sft.ts engineTeacher) encodes `prompt + "<think>" + trace` as one prompt:
    // a chat template would wrap its own reasoning in a new user turn.
    if (tok.chatTemplate && cs.enabled && cs.steps > 0 && cs.synthesize) {
      problems.push(
        `coldStart.synthesize: cold-start synthesis does not format its contexts with the chat template of model.tokenizer (${tok.chatTemplate.source}) yet; set data.chatTemplate: none, or synthesize: false`,
      );
    }
    const t = tok;
    try {
      const data = await prepareDataset(config.data, config.seed, { promptTokens: (p) => promptTokens(t, p).length });
      if (data.train.length === 0)
        problems.push(
          `data.source: no training rows (${data.counts.tooLong} of ${data.counts.total + data.counts.tooLong} prompts are over data.maxPromptTokens)`,
        );
      else if (data.eval.length === 0) problems.push('data.evalFraction: no evaluation rows; raise it or add rows');
      if (cs.enabled && cs.steps > 0 && !cs.synthesize && coldStartSet(data.train, config.seed).length === 0) {
        problems.push(
          "coldStart.enabled: the dataset's rows carry no `trace` or `response` to fine-tune on; add them to the rows, set coldStart.synthesize with a teacher, or set coldStart.enabled: false",
        );
      }
    } catch (err) {
      problems.push(`data.source: ${(err as Error).message}`);
    }
  }
  return problems.map((p) => `${file}: ${p}`);
}
