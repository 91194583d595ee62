/**
 * Hidden checkers: a programmatic quality check per task that no reward ever uses, so that evaluation
 * can tell whether OPERA's judge-free reward improved what a task actually asks for.
 *
 * - synthetic `writing` ("Describe a red fox."): the final answer (outside every think block) states the
 *   colour, the animal and the animal's trait (opera/synthetic.ts ANIMAL_TRAITS, which the prompt never
 *   states), as whole words, in that order, case-insensitive. Looser than exact match: other words may
 *   stand between and around them ("The red fox is very quick" passes).
 * - synthetic `math` ("What is 3+4?"): the extracted answer equals the reference (`exactMatch`).
 * Any other task (a prompt not of the synthetic form, an animal the table does not know, another task
 * type) has no check: `null`.
 */
import { exactMatch, finalAnswer, wholeWord } from './reward';
import { ANIMAL_TRAITS } from './synthetic';

export interface CheckedRow {
  prompt: string;
  reference: string;
  taskType: string;
}

const TRAITS: ReadonlyMap<string, string> = new Map(ANIMAL_TRAITS);
const WRITING_PROMPT = /^Describe an? ([\p{L}]+) ([\p{L}]+)\.$/iu;
const MATH_PROMPT = /^What is \d+\+\d+\?$/;

/** Whether `response` passes the row's hidden check, or `null` when the task has none. */
export function hiddenCheck(row: CheckedRow, response: string): boolean | null {
  if (row.taskType === 'math') return MATH_PROMPT.test(row.prompt) ? exactMatch('math', response, row.reference) : null;
  if (row.taskType !== 'writing') return null;
  const m = WRITING_PROMPT.exec(row.prompt);
  const trait = m ? TRAITS.get(m[2]!.toLowerCase()) : undefined;
  if (!m || trait === undefined) return null;
  return inOrderPattern(m[1]!, m[2]!, trait).test(finalAnswer(response));
}

/** Compiling a Unicode-aware pattern costs about a millisecond; an evaluation checks each pair many times. */
const patterns = new Map<string, RegExp>();
function inOrderPattern(...words: string[]): RegExp {
  const key = words.join('\u0000').toLowerCase();
  let re = patterns.get(key);
  if (!re) {
    re = new RegExp(words.map(wholeWord).join('[\\s\\S]*?'), 'iu');
    patterns.set(key, re);
  }
  return re;
}
