/**
 * A seeded synthetic task family, generated in code, for the demo and the tests. Strings are kept
 * to tens of characters because a byte-level model sees every character as a token.
 *
 * - `writing`: "Describe a red fox." → "The red fox is quick." The adjective after "is" is a fixed
 *   trait of the animal that the prompt does not state; the cold-start trace names the animal,
 *   the colour and — in a reflection step ("But …") — the trait, so reasoning makes the reference
 *   more likely, which is what the OPERA reward measures.
 * - `math`: "What is 3+4?" → "7", answered as `\boxed{7}` after a short check in the trace.
 *
 * Held-out combinations: each (colour, animal) pair is one row, and rows are split (opera/dataset.ts
 * splitDataset), so an evaluation prompt's colour × animal pair never appears in training; the model
 * can only answer it by knowing the animal's trait from other colours (opera/checkers.ts checks that).
 */
import { z } from 'zod';
import { mulberry32, shuffle } from '../util/random';
import { THINK_CLOSE, THINK_OPEN } from '../util/think';
import type { DatasetRow } from './dataset';

const COLORS = ['red', 'blue', 'green', 'gold', 'gray', 'white', 'black', 'pink'] as const;
/** Each animal's fixed trait, which its writing task's reference states and its prompt never does (opera/checkers.ts reads it). */
export const ANIMAL_TRAITS: readonly (readonly [animal: string, trait: string])[] = [
  ['fox', 'quick'],
  ['owl', 'wise'],
  ['cat', 'calm'],
  ['dog', 'loyal'],
  ['bee', 'busy'],
  ['frog', 'loud'],
  ['bear', 'strong'],
  ['deer', 'shy'],
];

function writingTask(color: string, animal: string, trait: string): DatasetRow {
  return {
    id: `writing-${color}-${animal}`,
    prompt: `Describe a ${color} ${animal}.`,
    reference: `The ${color} ${animal} is ${trait}.`,
    taskType: 'writing',
    trace: `A ${animal}.\n\nWait, it is ${color}.\n\nBut a ${animal} is ${trait}.`,
  };
}

function mathTask(a: number, b: number): DatasetRow {
  const sum = a + b;
  return {
    id: `math-${a}+${b}`,
    prompt: `What is ${a}+${b}?`,
    reference: String(sum),
    taskType: 'math',
    trace: `${a}+${b}=${sum}.\n\nWait, check: ${sum}-${b}=${a}.`,
  };
}

/** Distinct combinations available: at most 64 writing tasks (8 colours × 8 animals) and 100 math tasks. */
export const SYNTHETIC_LIMITS = { writing: COLORS.length * ANIMAL_TRAITS.length, math: 100 } as const;

/**
 * `writing` writing tasks and `math` math tasks (each capped at SYNTHETIC_LIMITS, since tasks are
 * distinct), drawn without replacement by a seeded shuffle and interleaved in a seeded order.
 */
export function syntheticTasks(options: { writing: number; math: number; seed: number }): DatasetRow[] {
  const random = mulberry32(options.seed);
  const writing = shuffle(
    COLORS.flatMap((color) => ANIMAL_TRAITS.map(([animal, trait]) => writingTask(color, animal, trait))),
    random,
  ).slice(0, options.writing);
  const math = shuffle(
    Array.from({ length: 100 }, (_, k) => mathTask(Math.floor(k / 10), k % 10)),
    random,
  ).slice(0, options.math);
  return shuffle([...writing, ...math], random);
}

export const sftRowSchema = z.object({ id: z.string().min(1), prompt: z.string().min(1), response: z.string().min(1) });
export type SftRow = z.infer<typeof sftRowSchema>;

/** The answer a response ends with: math answers go in `\boxed{}` so the reward can extract them. */
export function answerText(row: Pick<DatasetRow, 'reference' | 'taskType'>): string {
  return row.taskType === 'math' ? `\\boxed{${row.reference}}` : row.reference;
}

/**
 * The cold-start SFT set: `prompt → <think>trace</think>answer` for every row that carries a
 * `trace` (or a ready `response`, used as is), in a seeded order. Rows with neither are skipped.
 */
export function coldStartSet(rows: DatasetRow[], seed: number): SftRow[] {
  const sft = rows.flatMap((row): SftRow[] => {
    if (row.response !== undefined && row.response !== '')
      return [{ id: row.id, prompt: row.prompt, response: row.response }];
    if (row.trace !== undefined && row.trace.trim() !== '') {
      return [
        {
          id: row.id,
          prompt: row.prompt,
          response: `${THINK_OPEN}${row.trace.trim()}${THINK_CLOSE}${answerText(row)}`,
        },
      ];
    }
    return [];
  });
  return shuffle(sft, mulberry32(seed));
}
