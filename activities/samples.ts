/** The `samples` row of one scored response, train or eval: built here only, so both splits record the same fields. */
import type { NewSample } from '../db/schema';
import type { OperaReward } from '../opera/reward';
import type { ScoredResponse } from './engine';

export interface SampleSource {
  runId: string;
  split: 'train' | 'eval';
  iteration: number;
  promptId: string;
  sampleIndex: number;
  prompt: string;
  reference: string;
  taskType: string;
}

export function sampleRow(
  source: SampleSource,
  response: { text: string; tokens: number[] },
  reward: OperaReward,
  scores: ScoredResponse,
  advantage: number | null,
): NewSample {
  return {
    ...source,
    response: response.text,
    responseTokens: response.tokens.length,
    reward: reward.total,
    ppl: reward.ppl,
    reflection: reward.reflection,
    reflectionCount: reward.reflectionCount,
    correct: reward.correct ?? null,
    advantage,
    logpFull: scores.logpFull,
    logpInitial: scores.logpInitial,
    logpSegments: scores.logpSegments,
    probFull: scores.probFull ?? null,
  };
}
