/**
 * The OPERA reward (shared/spec/OPERA.md, "The reward"): a judge-free score built from the policy's
 * mean log-probability of the reference answer at checkpoints inside each rollout's reasoning.
 *
 * The log-probabilities themselves come from the engine (one forward per rollout with a tree mask);
 * this module only turns them into rewards, so it is pure and exactly testable. `scoringContexts`
 * gives the scorer the context strings whose reference log-probs it must compute, in the order
 * `operaRewards` expects them.
 */
import { THINK_CLOSE, THINK_OPEN } from '../util/think';

export interface OperaRollout {
  response: string;
  /** mlp(prompt + response). */
  logpFull: number;
  /** mlp(prompt + "<think>"). */
  logpInitial: number;
  /** mlp(prompt + "<think>" + s_0 + "\n\n" + … + s_j + "\n\n"), one per reflection segment. */
  logpSegments: number[];
}

export interface OperaGroup {
  taskType: string;
  reference: string;
  rollouts: OperaRollout[];
}

export interface OperaRewardOptions {
  pplWeight: number;
  reflectionWeight: number;
  /** EMA update weight of the new batch mean. */
  emaAlpha: number;
  /** Weight of the EMA in each smoothed value: v' = (1 − emaMix)·v + emaMix·ema. */
  emaMix: number;
  keywords: string[];
  /** `word`: whole words, case-insensitive; `substring`: the reference's `kw.lower() in seg.lower()`. */
  keywordMatch: 'word' | 'substring';
}

export interface OperaReward {
  total: number;
  ppl: number;
  reflection: number;
  /** Segments that counted as useful reflections; reflection = tanh(reflectionCount / 2). */
  reflectionCount: number;
  /** Math tasks only: exact match of the extracted answer. */
  correct?: boolean;
}

export const DEFAULT_OPERA_REWARD_OPTIONS: Readonly<OperaRewardOptions> = Object.freeze({
  pplWeight: 0.3,
  reflectionWeight: 0.7,
  emaAlpha: 0.1,
  emaMix: 0.2,
  keywords: ['But', 'Wait', 'Hmm', 'However', 'Wait a minute'],
  keywordMatch: 'word' as const,
});

/**
 * The reasoning steps of a response: the text between the first `<think>` and the first `</think>`
 * after it, stripped, split on blank lines ("\n\n"), each piece stripped, empty pieces dropped.
 * A response without a closed think block has no segments.
 */
export function reflectionSegments(response: string): string[] {
  const open = response.indexOf(THINK_OPEN);
  if (open < 0) return [];
  // Stryker disable next-line ArithmeticOperator: `open - 7` is equivalent: no `</think>` can start in the 7 characters before `<think>` or inside it (its only '<' would have to fall on the '<' of `<think>`)
  const close = response.indexOf(THINK_CLOSE, open + THINK_OPEN.length);
  // Stryker disable next-line EqualityOperator: `close <= 0` is equivalent (a found close is at index >= 7); `close >= 0` is the same node, so it goes too
  if (close < 0) return [];
  // Stryker disable next-line MethodExpression: dropping the outer .trim() is equivalent (the pieces are trimmed and empty ones dropped); the directive covers the other calls of this chain, which start on the same line
  return response
    .slice(open + THINK_OPEN.length, close)
    .trim()
    .split('\n\n')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * The contexts whose reference-answer log-probs a rollout needs, in the order of `OperaRollout`:
 * full = prompt + response, initial = prompt + "<think>", and one per segment with every segment so
 * far followed by "\n\n" (the reference builds the prefix the same way, re-joining stripped pieces).
 */
export function scoringContexts(
  prompt: string,
  response: string,
): { full: string; initial: string; segments: string[] } {
  const initial = prompt + THINK_OPEN;
  let prefix = initial;
  const segments = reflectionSegments(response).map((s) => (prefix += `${s}\n\n`));
  return { full: prompt + response, initial, segments };
}

/**
 * A math answer: remove every `<think>…</think>` block, then take the content of the last
 * `\boxed{…}` (non-greedy, so `\boxed{a}{b}` gives `a`, and like the reference's regex it does not
 * span lines), or the whole remaining text if there is none. Not trimmed: callers compare trimmed.
 */
export function mathAnswer(response: string): string {
  const outside = response.replace(/<think>[\s\S]*?<\/think>/g, '');
  const boxed = [...outside.matchAll(/\\boxed\{(.*?)\}/g)];
  const last = boxed[boxed.length - 1];
  // Stryker disable next-line StringLiteral: unreachable fallback (a match always sets its capture group); it only satisfies noUncheckedIndexedAccess
  return last ? (last[1] ?? '') : outside;
}

/** Exact match for `math` tasks (also what evaluation reports): the answer and reference, trimmed, are equal. */
export function mathCorrect(response: string, reference: string): boolean {
  return mathAnswer(response).trim() === reference.trim();
}

/** What a response answers: its text with every `<think>…</think>` block removed, trimmed. */
export function finalAnswer(response: string): string {
  return response.replace(/<think>[\s\S]*?<\/think>/g, '').trim();
}

/**
 * Exact match of the final answer, for every task type: `math` compares the extracted answer
 * (`mathCorrect`), every other type the whole final answer, both trimmed, with the reference.
 */
export function exactMatch(taskType: string, response: string, reference: string): boolean {
  return taskType === 'math' ? mathCorrect(response, reference) : finalAnswer(response) === reference.trim();
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A regex source matching `word` as a whole word: no letter, digit or `_` on either side. */
export const wholeWord = (word: string): string => `(?<![\\p{L}\\p{N}_])${escapeRegExp(word)}(?![\\p{L}\\p{N}_])`;

/** Builds the keyword test once per call; `word` requires no letter, digit or `_` on either side. */
export function keywordMatcher(keywords: string[], mode: 'word' | 'substring'): (segment: string) => boolean {
  if (mode === 'substring') {
    const lowered = keywords.map((k) => k.toLowerCase());
    return (segment) => {
      const s = segment.toLowerCase();
      return lowered.some((k) => s.includes(k));
    };
  }
  const patterns = keywords.map((k) => new RegExp(wholeWord(k), 'iu'));
  return (segment) => patterns.some((p) => p.test(segment));
}

/**
 * Which segments count as reflections (step 4 of `operaRewards`): walking from `last = initial`, segment
 * j counts when it contains a keyword and `values[j] − last > 0`; `last = values[j]` either way. The
 * values are the smoothed log-probs; exported so the dashboard marks exactly the segments that counted.
 */
export function reflectionMarks(
  segments: string[],
  initial: number,
  values: number[],
  hasKeyword: (segment: string) => boolean,
): boolean[] {
  let last = initial;
  return segments.map((segment, j) => {
    const value = values[j]!;
    const counted = hasKeyword(segment) && value - last > 0;
    last = value;
    return counted;
  });
}

/**
 * Rewards for a batch of groups, and the updated EMA baseline.
 *
 * 1. Every raw value of the batch (each rollout's full, initial and segment log-prob) feeds the
 *    batch mean b; `ema = b` on the first batch (`ema === null`), else `emaAlpha·b + (1 − emaAlpha)·ema`.
 *    An empty batch leaves `ema` as it was.
 * 2. Each value is smoothed with the updated ema: `v' = (1 − emaMix)·v + emaMix·ema`.
 * 3. ppl_i = #{j in group : full'_j < full'_i} / (G − 1), or 1 when G = 1 (ties rank equally, low).
 * 4. reflection: walking the segments from `last = initial'`, count segment j when it contains a
 *    keyword and `seg'_j − last > 0`; `last = seg'_j` either way. reflection = tanh(count / 2).
 * 5. total = pplWeight·ppl + reflectionWeight·reflection; for `math`, total = 1 if the extracted
 *    answer equals the reference (both trimmed) else 0, and a wrong answer reports ppl, reflection
 *    and reflectionCount as 0 (as the reference does for its components).
 */
export function operaRewards(
  groups: OperaGroup[],
  ema: number | null,
  options: Partial<OperaRewardOptions> = {},
): { rewards: OperaReward[][]; ema: number | null } {
  const opts: OperaRewardOptions = { ...DEFAULT_OPERA_REWARD_OPTIONS, ...options };
  if (ema !== null && !Number.isFinite(ema)) throw new Error(`operaRewards: EMA state is ${ema}, not a finite number`);
  const hasKeyword = keywordMatcher(opts.keywords, opts.keywordMatch);

  // Segments once per rollout, checked against the scorer's output before anything is computed.
  const segments = groups.map((group, g) =>
    group.rollouts.map((rollout, i) => {
      // A NaN would poison the EMA, which is carried (and checkpointed) across iterations.
      const named: (readonly [string, number])[] = [
        ['logpFull', rollout.logpFull],
        ['logpInitial', rollout.logpInitial],
        ...rollout.logpSegments.map((v, j) => [`logpSegments[${j}]`, v] as const),
      ];
      const bad = named.find(([, v]) => !Number.isFinite(v));
      if (bad)
        throw new Error(`operaRewards: group ${g} rollout ${i}: ${bad[0]} is ${bad[1]}, not a finite log-probability`);
      const segs = reflectionSegments(rollout.response);
      if (segs.length !== rollout.logpSegments.length) {
        throw new Error(
          `operaRewards: group ${g} rollout ${i}: ${rollout.logpSegments.length} segment log-probs ` +
            `but the response has ${segs.length} reflection segments`,
        );
      }
      return segs;
    }),
  );

  let sum = 0;
  let count = 0;
  for (const group of groups) {
    for (const r of group.rollouts) {
      for (const v of [r.logpFull, r.logpInitial, ...r.logpSegments]) {
        sum += v;
        count += 1;
      }
    }
  }
  if (count === 0) return { rewards: groups.map(() => []), ema };
  const batchMean = sum / count;
  const newEma = ema === null ? batchMean : opts.emaAlpha * batchMean + (1 - opts.emaAlpha) * ema;
  // Every value of the batch is smoothed with the same newEma, so the shift emaMix·newEma never changes a
  // rank or the sign of a difference: `- emaMix·newEma` and `emaMix / newEma` are equivalent (with
  // log-probs <= 0, newEma = 0 only when every value is 0, and then all comparisons tie either way).
  // The directive also covers this line's other arithmetic mutants (`1 + emaMix`, `/ v`), which the
  // emaMix = 1 and default-mix tests kill.
  // Stryker disable next-line ArithmeticOperator: equivalent shift, see above
  const smooth = (v: number) => (1 - opts.emaMix) * v + opts.emaMix * newEma;

  const rewards = groups.map((group, g) => {
    const fulls = group.rollouts.map((r) => smooth(r.logpFull));
    const G = fulls.length;
    return group.rollouts.map((rollout, i): OperaReward => {
      const mine = fulls[i]!;
      const ppl = G > 1 ? fulls.filter((f) => f < mine).length / (G - 1) : 1;

      const reflectionCount = reflectionMarks(
        segments[g]![i]!,
        smooth(rollout.logpInitial),
        rollout.logpSegments.map(smooth),
        hasKeyword,
      ).filter(Boolean).length;
      const reflection = Math.tanh(reflectionCount / 2);

      if (group.taskType === 'math') {
        const correct = mathCorrect(rollout.response, group.reference);
        return correct
          ? { total: 1, ppl, reflection, reflectionCount, correct }
          : { total: 0, ppl: 0, reflection: 0, reflectionCount: 0, correct };
      }
      return { total: opts.pplWeight * ppl + opts.reflectionWeight * reflection, ppl, reflection, reflectionCount };
    });
  });
  return { rewards, ema: newEma };
}
