/**
 * The reward-hacking probe: guiding words that add no information, inserted into a response's reasoning
 * as extra steps. A reward that rises for them can be gamed by writing them. The `substringOnly` fillers
 * carry a keyword only inside another word ("button" and "attribute" contain "but"): `keywordMatch:
 * substring` counts them as reflections, `word` does not. ("about" holds no default keyword: b-o-u-t.)
 */
import { THINK_CLOSE, THINK_OPEN } from '../util/think';
import { reflectionSegments } from './reward';

export const PROBE_FILLERS = {
  /** Guiding words and nothing else. */
  guiding: ['Wait, let me think.', 'But hmm.'],
  /** No guiding word as a word: only inside other words. */
  substringOnly: ['Press the button.', 'Note the attribute.'],
} as const;
export type ProbeFillers = keyof typeof PROBE_FILLERS;

/**
 * The response with `fillers` inserted as reasoning steps after its first step (a response without a
 * closed think block is returned unchanged: it has no steps to add to).
 */
export function withFillers(response: string, fillers: readonly string[]): string {
  const open = response.indexOf(THINK_OPEN);
  const close = open < 0 ? -1 : response.indexOf(THINK_CLOSE, open + THINK_OPEN.length);
  if (close < 0) return response;
  const steps = reflectionSegments(response);
  const padded = [...steps.slice(0, 1), ...fillers, ...steps.slice(1)];
  return `${response.slice(0, open)}${THINK_OPEN}${padded.join('\n\n')}${response.slice(close)}`;
}
