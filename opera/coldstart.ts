/**
 * Cold-start synthesis (shared/spec/OPERA.md, "guiding words and perplexity-prioritised rollouts"):
 * a teacher writes its reasoning a step at a time; whenever it is about to reflect (a guiding word),
 * k candidate continuations are sampled and the least perplexing one's first paragraph is kept.
 *
 * The teacher is injected (`TeacherGenerator`) so this module stays pure; engine/ supplies the
 * real one. Randomness comes only from the keys passed to the generator, so a resumed job makes
 * the same choices as an uninterrupted one.
 */
import { THINK_CLOSE, THINK_OPEN } from '../util/think';

/** What a generation call returns. */
export interface TeacherGeneration {
  /** The generated text, cut before the stop string that ended it (the stop string is not kept). */
  text: string;
  /** The stop string that ended generation, or null (token budget or end of sequence). */
  stoppedBy: string | null;
  /** Log-probabilities of the generated tokens of `text`. */
  logps: number[];
}

export interface TeacherGenerateOptions {
  /** Stop strings, matched in the generated text only (never in the context); see `applyStops`. */
  stop: string[];
  maxNewTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  /** Counter-based randomness key; distinct for every call of one synthesis. */
  key: number[];
}

export interface TeacherGenerator {
  generate(context: string, opts: TeacherGenerateOptions): Promise<TeacherGeneration>;
  /** Log-probability of each token of `text` given the tokens before it (the first token has none). */
  contextLogps(text: string): Promise<number[]>;
}

export interface ColdStartOptions {
  temperature: number;
  topP: number;
  topK: number;
  /** k: candidates sampled per reflection. */
  candidates: number;
  /** After this many reflections the teacher generates straight to `</think>`. */
  maxReflections: number;
  /** Token budget of one generation call (a step, a candidate, the closing step, the answer). */
  maxStepTokens: number;
  guidingWords: string[];
}

export const DEFAULT_COLD_START_OPTIONS: Readonly<ColdStartOptions> = Object.freeze({
  temperature: 0.6,
  topP: 0.95,
  topK: 20,
  candidates: 4,
  maxReflections: 20,
  maxStepTokens: 64,
  guidingWords: ['Wait', 'But', 'Hmm', 'Let me think', 'However'],
});

/** Stops for a main step: any guiding word, anywhere, or the end of the reasoning. */
export function stepStops(guidingWords: string[]): string[] {
  return [...guidingWords, THINK_CLOSE];
}

/**
 * Stops for a candidate: a guiding word only where it starts a new line or sentence (`\nWait`,
 * `. Wait`), so the candidate's own opening reflection ("Wait, …") is not cut off; or `</think>`.
 */
export function candidateStops(guidingWords: string[]): string[] {
  return [...guidingWords.flatMap((w) => [`\n${w}`, `. ${w}`]), THINK_CLOSE];
}

/**
 * Reference semantics for stop strings, for generator implementations: the earliest occurrence in
 * `text` wins (the longest one at that position if several start there); the result is the text
 * before it and the stop string, or the whole text and null.
 */
export function applyStops(text: string, stops: string[]): { text: string; stoppedBy: string | null } {
  let best: { at: number; stop: string } | null = null;
  for (const stop of stops) {
    if (stop === '') continue;
    const at = text.indexOf(stop);
    if (at < 0) continue;
    // Two different stops found at the same index cannot have the same length, so `>=` for the length
    // test below is an equivalent mutant (`<=` shares its node and is ignored with it).
    if (
      !best ||
      at < best.at ||
      (at === best.at && /* Stryker disable EqualityOperator: equivalent, see above */ stop.length > best.stop.length)
    )
      best = { at, stop };
  }
  // Stryker restore EqualityOperator
  return best ? { text: text.slice(0, best.at), stoppedBy: best.stop } : { text, stoppedBy: null };
}

/** `exp(−mean log p)`; +∞ with no tokens, so an empty candidate never wins. */
export function perplexity(logps: number[]): number {
  if (logps.length === 0) return Infinity;
  return Math.exp(-logps.reduce((a, b) => a + b, 0) / logps.length);
}

/** Join reasoning paragraphs with a blank line, skipping empty ones (so no trace starts with "\n\n"). */
function appendParagraph(trace: string, text: string): string {
  // Stryker disable next-line MethodExpression: equivalent, `trace` is always a value this function returned (already trimmed) or ''
  const a = trace.trim();
  const b = text.trim();
  return a && b ? `${a}\n\n${b}` : a || b;
}

export interface SynthesizedTrace {
  prompt: string;
  reference: string;
  /** The reasoning, paragraphs separated by blank lines (no `<think>` tags). */
  trace: string;
  /** The full response: `<think>trace</think>answer`. */
  output: string;
  /** Reflections taken (guiding-word stops), at most `maxReflections`. */
  reflections: number;
}

/**
 * One prompt's synthesis:
 * 1. generate from `prompt + "<think>" + trace`, stopping at a guiding word or `</think>`;
 * 2. reached `</think>` → the trace is complete;
 * 3. otherwise append the text, count a reflection, sample `candidates` continuations of
 *    `trace + "\n\n"` (stopped by `candidateStops`), score each by the perplexity of the context
 *    tokens and its generated tokens together, and append the first paragraph of the lowest
 *    (the first on ties);
 * 4. after `maxReflections` reflections, generate straight to `</think>`;
 * 5. generate the answer after the closed trace.
 * Each generate call gets key `[...key, n]` with n counting calls from 0.
 */
export async function synthesizeTrace(
  prompt: string,
  reference: string,
  gen: TeacherGenerator,
  options: Partial<ColdStartOptions> = {},
  key: number[] = [],
): Promise<SynthesizedTrace> {
  const o: ColdStartOptions = { ...DEFAULT_COLD_START_OPTIONS, ...options };
  let calls = 0;
  const generate = (context: string, stop: string[]) =>
    gen.generate(context, {
      stop,
      maxNewTokens: o.maxStepTokens,
      temperature: o.temperature,
      topP: o.topP,
      topK: o.topK,
      key: [...key, calls++],
    });

  let trace = '';
  let reflections = 0;
  let closed = false;
  while (reflections < o.maxReflections) {
    const step = await generate(prompt + THINK_OPEN + trace, stepStops(o.guidingWords));
    trace = appendParagraph(trace, step.text);
    if (step.stoppedBy === THINK_CLOSE) {
      closed = true;
      break;
    }
    reflections += 1;

    const context = `${prompt}${THINK_OPEN}${trace}\n\n`;
    // Every candidate shares the context, so its log-probs are computed once.
    const contextLogps = await gen.contextLogps(context);
    let best: { paragraph: string; ppl: number } | null = null;
    for (let c = 0; c < o.candidates; c++) {
      const cand = await generate(context, candidateStops(o.guidingWords));
      // A ". Wait" stop ends a sentence: keep its full stop; only the guiding word is cut.
      const text = cand.stoppedBy?.startsWith('. ') ? `${cand.text}.` : cand.text;
      const ppl = perplexity([...contextLogps, ...cand.logps]);
      // Stryker disable next-line MethodExpression: dropping this .trim() is equivalent, appendParagraph trims the paragraph again
      if (!best || ppl < best.ppl) best = { paragraph: text.split('\n\n')[0]!.trim(), ppl };
    }
    if (best) trace = appendParagraph(trace, best.paragraph);
  }
  if (!closed) {
    const rest = await generate(prompt + THINK_OPEN + trace, [THINK_CLOSE]);
    trace = appendParagraph(trace, rest.text);
  }

  const answer = await generate(`${prompt}${THINK_OPEN}${trace}${THINK_CLOSE}`, []);
  return { prompt, reference, trace, output: `${THINK_OPEN}${trace}${THINK_CLOSE}${answer.text.trim()}`, reflections };
}

/**
 * The resumable job over a dataset: yields one synthesized row at a time (the caller persists it
 * before asking for the next) and skips ids already done. A row's key is `[...key, index]` with its
 * index in `rows`, so it does not depend on which rows were skipped.
 */
export async function* synthesizeRows<R extends { id: string; prompt: string; reference: string }>(
  rows: R[],
  gen: TeacherGenerator,
  options: Partial<ColdStartOptions> = {},
  key: number[] = [],
  done: ReadonlySet<string> = new Set(),
): AsyncGenerator<SynthesizedTrace & { id: string; index: number }> {
  for (const [index, row] of rows.entries()) {
    if (done.has(row.id)) continue;
    const result = await synthesizeTrace(row.prompt, row.reference, gen, options, [...key, index]);
    yield { ...result, id: row.id, index };
  }
}
