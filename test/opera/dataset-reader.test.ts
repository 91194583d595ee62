// How loadDataset handles what the Parquet reader returns, in-process with the reader mocked: jest on
// Node 20 cannot load the ESM-only hyparquet (dataset.test.ts reads real files in a child process, where
// this module's coverage is invisible to mutation testing).
const reader: { records: Record<string, unknown>[] | Error; files: string[] } = { records: [], files: [] };
jest.mock('hyparquet', () => ({
  asyncBufferFromFile: async (file: string) => {
    reader.files.push(file);
    return { file };
  },
  parquetReadObjects: async () => {
    if (reader.records instanceof Error) throw reader.records;
    return reader.records;
  },
}));

import { loadDataset } from '../../opera/dataset';

describe('loadDataset (Parquet records)', () => {
  // Catches: INT64 ids (bigint) or INT32 ids not turned into strings, or nulls taken as values.
  it('stringifies numeric and bigint ids and treats nulls as absent', async () => {
    reader.records = [
      { id: 5n, prompt: 'p1', reference: 'r1', taskType: null, trace: null },
      { id: 7, prompt: 'p2', reference: 'r2', taskType: 'math', trace: 't' },
    ];
    expect(await loadDataset('/data/rows.PARQUET')).toEqual([
      { id: '5', prompt: 'p1', reference: 'r1', taskType: 'writing' },
      { id: '7', prompt: 'p2', reference: 'r2', taskType: 'math', trace: 't' },
    ]);
    expect(reader.files.at(-1)).toBe('/data/rows.PARQUET');
  });

  // Catches: rows numbered from 0 (or not at all) in errors.
  it('names the 1-based row of a bad record', async () => {
    reader.records = [{ prompt: 'p', reference: 'r' }, { prompt: 'q', reference: 'r' }, { prompt: 'x', reference: 3n }];
    await expect(loadDataset('/data/bad.parquet')).rejects.toThrow("/data/bad.parquet: row 3: field 'reference' must be a non-empty string");
  });

  // Catches: a reader failure escaping without the file name.
  it('names the file when the reader fails', async () => {
    reader.records = new Error('invalid magic number');
    await expect(loadDataset('/data/broken.parquet')).rejects.toThrow('/data/broken.parquet: cannot read Parquet: invalid magic number');
  });

  // Catches: the format chosen by a substring instead of the file's extension.
  it('chooses the reader by the extension only', async () => {
    reader.records = [{ prompt: 'p', reference: 'r' }];
    reader.files = [];
    await expect(loadDataset('/data/rows.parquet.csv')).rejects.toThrow('/data/rows.parquet.csv: unsupported dataset format');
    expect(reader.files).toEqual([]);
    expect(await loadDataset('/data/rows.jsonl.parquet')).toHaveLength(1);
    expect(reader.files).toEqual(['/data/rows.jsonl.parquet']);
  });
});
