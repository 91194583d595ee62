/**
 * The dataset a run config names, read from disk (or generated): `.jsonl` text and `.parquet` records go
 * to opera/dataset.ts, which validates, de-duplicates, splits and hashes them. `train` calls this to
 * refuse a bad file before the run is recorded; the prepareDataset stage calls it to make the split.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import {
  decodeJsonl,
  dedupeRows,
  parseJsonl,
  parseRecords,
  prepareRows,
  type DatasetRow,
  type Located,
  type PreparedDataset,
} from '../opera/dataset';
import { syntheticTasks } from '../opera/synthetic';
import type { RunConfig } from './schema';

/** What a Parquet string that is not UTF-8 decodes to, so that the row and column can be named. */
class NotUtf8 {}
const utf8 = new TextDecoder('utf-8', { fatal: true });
const stringFromBytes = (bytes: Uint8Array | undefined): string | NotUtf8 | undefined => {
  if (bytes === undefined) return undefined;
  try {
    return utf8.decode(bytes);
  } catch {
    return new NotUtf8();
  }
};

async function readParquet(file: string): Promise<Located[]> {
  // hyparquet is ESM-only; a dynamic import loads it from this CommonJS module.
  const { asyncBufferFromFile, parquetReadObjects } = await import('hyparquet');
  let records: Record<string, unknown>[];
  try {
    // The default string parser replaces bytes that are not UTF-8 with U+FFFD, which would be trained on.
    records = await parquetReadObjects({ file: await asyncBufferFromFile(file), parsers: { stringFromBytes } });
  } catch (err) {
    throw new Error(`${file}: cannot read Parquet: ${(err as Error).message}`);
  }
  records.forEach((record, i) => {
    for (const [key, value] of Object.entries(record)) {
      if (value instanceof NotUtf8) throw new Error(`${file}: row ${i + 1}: field '${key}' is not valid UTF-8`);
    }
  });
  return parseRecords(records, file);
}

/** The validated rows of a `.jsonl` or `.parquet` file (the extension decides), in file order. */
export async function readDatasetFile(path: string): Promise<Located[]> {
  let located: Located[];
  if (/\.parquet$/i.test(path)) located = await readParquet(path);
  else if (/\.jsonl$/i.test(path)) {
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (err) {
      throw new Error(`${path}: cannot read dataset: ${(err as Error).message}`);
    }
    located = parseJsonl(decodeJsonl(bytes, path), path);
  } else throw new Error(`${path}: unsupported dataset format (expected .jsonl or .parquet)`);
  if (located.length === 0) throw new Error(`${path}: the dataset has no rows`);
  return located;
}

/** Load, validate and de-duplicate a `.jsonl` or `.parquet` dataset. */
export async function loadDataset(path: string): Promise<DatasetRow[]> {
  return dedupeRows(await readDatasetFile(path)).rows;
}

/** The rows of `data.source`: the seeded synthetic family, or a file (relative to `baseDir`). */
export async function sourceRows(
  data: Omit<RunConfig['data'], 'chatTemplate'>,
  baseDir = process.cwd(),
): Promise<Located[]> {
  if (data.source === 'synthetic') {
    // Stryker disable next-line StringLiteral,ArithmeticOperator: equivalent, synthetic rows have distinct ids and contents, so no error ever names this location
    return syntheticTasks(data.synthetic).map((row, i) => ({ row, where: `synthetic: row ${i + 1}` }));
  }
  return readDatasetFile(isAbsolute(data.source) ? data.source : resolve(baseDir, data.source));
}

/**
 * The prepareDataset stage's input → output: read the source, then de-duplicate, filter, hash and split.
 * How a prompt becomes tokens (the chat template) is the caller's `promptTokens`.
 */
export async function prepareDataset(
  data: Omit<RunConfig['data'], 'chatTemplate'>,
  seed: number,
  options: { baseDir?: string; promptTokens?: (prompt: string) => number } = {},
): Promise<PreparedDataset> {
  return prepareRows(await sourceRows(data, options.baseDir), {
    evalFraction: data.evalFraction,
    maxPromptTokens: data.maxPromptTokens,
    seed,
    ...(options.promptTokens ? { promptTokens: options.promptTokens } : {}),
  });
}
