/**
 * Training data: rows `{id?, prompt, reference, taskType?}` plus optional SFT fields, validated,
 * de-duplicated, split train/eval and content-hashed. Pure: the text of a JSONL file or the records of
 * a Parquet file come in (config/dataset.ts reads the files), rows come out. Every error names the file
 * and the 1-based line (JSONL) or row (Parquet).
 */
import { z } from 'zod';
import { canonicalJson, sha256 } from '../util/canonical';
import { jsonProblem } from '../util/json';

// (The schema-level error already names min(1)'s issue too, so dropping min's own `{ error }` is equivalent.)
// A string of only whitespace is as empty as '' for training: refused as well.
const nonEmpty = z
  .string({ error: 'must be a non-empty string' })
  .min(1, /* Stryker disable ObjectLiteral: equivalent, see above */ { error: 'must be a non-empty string' })
  // Stryker restore ObjectLiteral
  .refine((s) => s.trim() !== '', { error: 'must not be blank (only whitespace)' });
const optionalText = z.string({ error: 'must be a string' }).optional();

/** A row as a file may write it: `id` and `taskType` may be left out. Unknown columns are ignored. */
export const datasetRowInputSchema = z.object({
  id: nonEmpty.optional(),
  prompt: nonEmpty,
  reference: nonEmpty,
  taskType: z.enum(['writing', 'math'], { error: "must be 'writing' or 'math'" }).default('writing'),
  /** SFT: the reasoning that goes inside `<think>…</think>` (paragraphs separated by blank lines). */
  trace: optionalText,
  /** SFT: a complete response (`<think>…</think>answer`); takes precedence over `trace`. */
  response: optionalText,
});

/** A loaded row: `id` is always set (a content hash when the file had none). */
export const datasetRowSchema = datasetRowInputSchema.extend({ id: nonEmpty });
export type DatasetRow = z.infer<typeof datasetRowSchema>;
export type TaskType = DatasetRow['taskType'];

/** Default id: derived from the content, so the same row gets the same id in every file and run. */
export function rowId(prompt: string, reference: string): string {
  return sha256(canonicalJson({ prompt, reference })).slice(0, 16);
}

/** Validate one raw record; `where` (e.g. `data.jsonl:3`) prefixes every error. */
function validateRow(raw: unknown, where: string): DatasetRow {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new Error(`${where}: expected an object with fields 'prompt' and 'reference'`);
  }
  // null in a nullable column (Parquet) or in JSON means "absent"; numeric ids become strings.
  // A null-prototype object: a key such as `__proto__` stays a key and never reaches the prototype.
  const cleaned = Object.create(null) as Record<string, unknown>;
  for (const [key, value] of Object.entries(raw)) {
    if (key === '__proto__') throw new Error(`${where}: field '__proto__' is not allowed in a row`);
    // An undefined member is absent for zod as well, so not skipping it is an equivalent mutant.
    if (value === null || /* Stryker disable ConditionalExpression: equivalent, see above */ value === undefined)
      continue;
    // Stryker restore ConditionalExpression
    cleaned[key] = key === 'id' && (typeof value === 'number' || typeof value === 'bigint') ? String(value) : value;
  }
  const parsed = datasetRowInputSchema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    // The row schema is flat: an issue path has at most one key, so the separator is never used.
    throw new Error(
      `${where}: field '${issue.path.map(String).join(/* Stryker disable StringLiteral: equivalent, see above */ '.')}' ${issue.message}`,
    );
  }
  // Stryker restore StringLiteral
  const row = parsed.data;
  return { ...row, id: row.id ?? rowId(row.prompt, row.reference) };
}

/** A validated row and where it came from (`file:line` or `file: row n`), for later errors. */
export interface Located {
  row: DatasetRow;
  where: string;
}

/**
 * A JSONL file's bytes → its text. A UTF-8 byte order mark (as Windows editors save) is dropped; bytes
 * that are not UTF-8 are refused with the line they are on, instead of being trained on as U+FFFD.
 */
export function decodeJsonl(bytes: Uint8Array, file: string): string {
  const start = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  try {
    return decoder.decode(bytes.subarray(start));
  } catch {
    // A newline byte is never part of a multi-byte character, so the bad bytes lie within one line.
    let lineStart = start;
    let line = 1;
    for (;;) {
      const end = bytes.indexOf(0x0a, lineStart);
      const stop = end === -1 ? bytes.length : end;
      try {
        decoder.decode(bytes.subarray(lineStart, stop));
      } catch {
        break;
      }
      if (end === -1) break;
      lineStart = end + 1;
      line += 1;
    }
    throw new Error(`${file}:${line}: not valid UTF-8 (save the file as UTF-8)`);
  }
}

/** JSONL text → rows. Blank lines are skipped; line numbers are 1-based. */
export function parseJsonl(text: string, file: string): Located[] {
  const out: Located[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (err) {
      throw new Error(`${where}: invalid JSON (${jsonProblem(err)})`);
    }
    out.push({ row: validateRow(raw, where), where });
  });
  return out;
}

/**
 * Records of a Parquet file (as its reader returns them: INT64 columns as bigint, absent values as
 * null) → rows. Rows are numbered from 1 in errors.
 */
export function parseRecords(records: Record<string, unknown>[], file: string): Located[] {
  return records.map((raw, i) => {
    const where = `${file}: row ${i + 1}`;
    return { row: validateRow(raw, where), where };
  });
}

/**
 * Drop repeated (prompt, reference) pairs, keeping the first. Two different rows that claim the
 * same explicit id are an error: training and eval records are keyed by id.
 */
export function dedupeRows(rows: Located[]): { rows: DatasetRow[]; duplicates: number } {
  const seenContent = new Set<string>();
  const seenIds = new Map<string, Located>();
  const out: DatasetRow[] = [];
  let duplicates = 0;
  for (const item of rows) {
    const content = canonicalJson([item.row.prompt, item.row.reference]);
    if (seenContent.has(content)) {
      duplicates += 1;
      continue;
    }
    const first = seenIds.get(item.row.id);
    if (first)
      throw new Error(`${item.where}: field 'id' repeats '${item.row.id}' of ${first.where} with different content`);
    seenContent.add(content);
    seenIds.set(item.row.id, item);
    out.push(item.row);
  }
  return { rows: out, duplicates };
}

/** sha256 of the canonical JSON of the rows, in order (order decides the training stream). */
export function datasetHash(rows: DatasetRow[]): string {
  return sha256(canonicalJson(rows));
}

/**
 * Deterministic train/eval split, stratified by task type: within each type, rows are ordered by
 * sha256(seed:id) and the first round(n·evalFraction) go to eval — at least one when the type has
 * two or more rows, never all of them — so a small dataset still evaluates every task type.
 * Both parts keep the input order. Depends only on (ids, evalFraction, seed).
 */
export function splitDataset(
  rows: DatasetRow[],
  evalFraction: number,
  seed: number,
): { train: DatasetRow[]; eval: DatasetRow[] } {
  if (!(evalFraction >= 0 && evalFraction < 1))
    throw new Error(`splitDataset: evalFraction ${evalFraction} not in [0, 1)`);
  const evalIds = new Set<string>();
  const byType = new Map<string, DatasetRow[]>();
  for (const row of rows) byType.set(row.taskType, [...(byType.get(row.taskType) ?? []), row]);
  for (const group of byType.values()) {
    const n = group.length;
    let nEval = Math.min(Math.round(n * evalFraction), n - 1);
    if (evalFraction > 0 && n >= 2) nEval = Math.max(nEval, 1);
    const ordered = group
      .map((row) => ({ row, key: sha256(`${seed}:${row.id}`) }))
      // Keys of distinct ids never tie (equal ids give equal keys, and then either order adds the same id),
      // and sort() reads only the sign of the result: `<=` for `<`, and any change to the
      // `a.key > b.key ? 1 : 0` branch, select the same rows. (`>=` for `<` shares its node.)
      .sort((a, b) =>
        /* Stryker disable EqualityOperator: equivalent, see above */ a.key < b.key
          ? -1
          : /* Stryker disable ConditionalExpression: equivalent, see above */ a.key > b.key
            ? 1
            : 0,
      );
    // Stryker restore EqualityOperator,ConditionalExpression
    for (const { row } of ordered.slice(0, nEval)) evalIds.add(row.id);
  }
  return { train: rows.filter((r) => !evalIds.has(r.id)), eval: rows.filter((r) => evalIds.has(r.id)) };
}

/** What preparing a dataset needs from the run config's `data` section. */
export interface PrepareOptions {
  evalFraction: number;
  maxPromptTokens: number;
  seed: number;
  /** Tokens of a prompt as the model sees it (tokenizers live in engine/, so the caller injects one). */
  promptTokens?: (prompt: string) => number;
}

export interface PreparedDataset {
  train: DatasetRow[];
  eval: DatasetRow[];
  /** datasetHash of all kept rows (before the split). */
  hash: string;
  counts: {
    total: number;
    train: number;
    eval: number;
    duplicates: number;
    tooLong: number;
    writing: number;
    math: number;
  };
}

/** The dataset stage: de-duplicate, drop prompts longer than `maxPromptTokens` tokens, hash and split. */
export function prepareRows(located: Located[], options: PrepareOptions): PreparedDataset {
  const loaded = dedupeRows(located);
  const count = options.promptTokens;
  const rows = count ? loaded.rows.filter((r) => count(r.prompt) <= options.maxPromptTokens) : loaded.rows;
  const { train, eval: evalRows } = splitDataset(rows, options.evalFraction, options.seed);
  return {
    train,
    eval: evalRows,
    hash: datasetHash(rows),
    counts: {
      total: rows.length,
      train: train.length,
      eval: evalRows.length,
      duplicates: loaded.duplicates,
      tooLong: loaded.rows.length - rows.length,
      writing: rows.filter((r) => r.taskType === 'writing').length,
      math: rows.filter((r) => r.taskType === 'math').length,
    },
  };
}
