import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syntheticTasks } from '../../opera/synthetic';
import { loadDataset, prepareDataset } from '../../config/dataset';
import { datasetHash, parseRecords, rowId, splitDataset, type DatasetRow } from '../../opera/dataset';

const dir = mkdtempSync(join(tmpdir(), 'operaflow-dataset-'));
const write = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};
const jsonl = (...rows: unknown[]) =>
  rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

describe('loadDataset (JSONL)', () => {
  it('validates, fills defaults, skips blank lines and drops repeated (prompt, reference)', async () => {
    const path = write(
      'ok.jsonl',
      jsonl(
        { id: 'a', prompt: 'P1', reference: 'R1', taskType: 'math', trace: 'T', extra: 1 },
        '',
        { prompt: 'P2', reference: 'R2', trace: null },
        { id: 'other', prompt: 'P1', reference: 'R1' }, // same content as line 1: dropped
        { id: 7, prompt: 'P3', reference: 'R3', response: '<think>x</think>R3' },
      ),
    );
    expect(await loadDataset(path)).toEqual([
      { id: 'a', prompt: 'P1', reference: 'R1', taskType: 'math', trace: 'T' },
      { id: rowId('P2', 'R2'), prompt: 'P2', reference: 'R2', taskType: 'writing' },
      { id: '7', prompt: 'P3', reference: 'R3', taskType: 'writing', response: '<think>x</think>R3' },
    ]);
    expect(rowId('P2', 'R2')).toMatch(/^[0-9a-f]{16}$/);
  });

  const cases: [string, string, string][] = [
    ['bad JSON names the line', jsonl({ prompt: 'p', reference: 'r' }, '{"prompt": "p2",'), ':2: invalid JSON ('],
    [
      'blank prompt',
      jsonl({ prompt: 'p', reference: 'r' }, { prompt: ' \t\n', reference: 'r' }),
      ":2: field 'prompt' must not be blank (only whitespace)",
    ],
    ['blank reference', jsonl({ prompt: 'p', reference: '   ' }), ":1: field 'reference' must not be blank"],
    [
      '__proto__ key',
      jsonl({ prompt: 'p', reference: 'r' }, '{"__proto__": {"prompt": "p", "reference": "r"}}'),
      ":2: field '__proto__' is not allowed in a row",
    ],
    [
      'missing prompt',
      jsonl({ prompt: 'p', reference: 'r' }, { reference: 'r2' }),
      ":2: field 'prompt' must be a non-empty string",
    ],
    ['empty prompt', jsonl({ prompt: '', reference: 'r' }), ":1: field 'prompt' must be a non-empty string"],
    ['wrong type', jsonl({ prompt: 'p', reference: 42 }), ":1: field 'reference' must be a non-empty string"],
    [
      'bad taskType',
      jsonl({ prompt: 'p', reference: 'r' }, '', { prompt: 'q', reference: 'r', taskType: 'poem' }),
      ":3: field 'taskType' must be 'writing' or 'math'",
    ],
    ['wrong trace type', jsonl({ prompt: 'p', reference: 'r', trace: ['a'] }), ":1: field 'trace' must be a string"],
    ['not an object', jsonl(['p', 'r']), ":1: expected an object with fields 'prompt' and 'reference'"],
    [
      'id reused for other content',
      jsonl({ id: 'x', prompt: 'p', reference: 'r' }, { id: 'x', prompt: 'q', reference: 'r' }),
      ":2: field 'id' repeats 'x' of ",
    ],
    ['no rows', '\n\n', ': the dataset has no rows'],
  ];
  it.each(cases)('rejects %s', async (name, text, message) => {
    const path = write(`${name.replace(/\W+/g, '-')}.jsonl`, text);
    await expect(loadDataset(path)).rejects.toThrow(path + message);
  });

  // Catches: invalid UTF-8 replaced by U+FFFD and trained on; a BOM refused or kept in the first prompt.
  it('refuses bytes that are not UTF-8 with the line, and accepts a UTF-8 byte order mark', async () => {
    const good = Buffer.from(jsonl({ prompt: 'p', reference: 'r' }));
    const bad = Buffer.concat([
      good,
      Buffer.from('{"prompt": "caf'),
      Buffer.from([0xe9]),
      Buffer.from('", "reference": "r"}\n'),
    ]);
    const badPath = join(dir, 'latin1.jsonl');
    writeFileSync(badPath, Buffer.concat([bad, good]));
    await expect(loadDataset(badPath)).rejects.toThrow(`${badPath}:2: not valid UTF-8`);
    const bomPath = join(dir, 'bom.jsonl');
    writeFileSync(
      bomPath,
      Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(jsonl({ prompt: 'é', reference: 'r' }))]),
    );
    expect(await loadDataset(bomPath)).toEqual([
      { id: rowId('é', 'r'), prompt: 'é', reference: 'r', taskType: 'writing' },
    ]);
  });

  // Catches: an error message that quotes the line (a dataset can be a file its reader may not show).
  it('does not quote the content of a line that is not JSON', async () => {
    const path = write('secret.jsonl', 'root:x:0:0:SECRET\n');
    await expect(loadDataset(path)).rejects.toThrow(/:1: invalid JSON \(unexpected content/);
    await expect(loadDataset(path)).rejects.not.toThrow(/SECRET/);
  });

  // Catches: a whitespace-only line parsed as JSON (and rejected) instead of skipped like an empty one.
  it('skips lines of whitespace', async () => {
    const path = write(
      'spaces.jsonl',
      jsonl({ prompt: 'p', reference: 'r' }, '   \t', { prompt: 'q', reference: 's' }),
    );
    expect((await loadDataset(path)).map((r) => r.prompt)).toEqual(['p', 'q']);
  });

  // Catches: ids of any type stringified (only numeric ids are: a boolean or list is an error).
  it('rejects an id that is neither a string nor a number', async () => {
    const path = write('bool-id.jsonl', jsonl({ id: true, prompt: 'p', reference: 'r' }));
    await expect(loadDataset(path)).rejects.toThrow(`${path}:1: field 'id' must be a non-empty string`);
  });

  // Catches: the format chosen by a substring of the name instead of its extension.
  it('chooses the format by the extension only', async () => {
    const path = write('rows.parquet.jsonl', jsonl({ prompt: 'p', reference: 'r' }));
    expect(await loadDataset(path)).toHaveLength(1);
    await expect(loadDataset(join(dir, 'rows.jsonl.csv'))).rejects.toThrow(
      /rows\.jsonl\.csv: unsupported dataset format/,
    );
  });

  it('rejects unknown formats and missing files by path', async () => {
    await expect(loadDataset(join(dir, 'rows.csv'))).rejects.toThrow(/rows\.csv: unsupported dataset format/);
    await expect(loadDataset(join(dir, 'missing.jsonl'))).rejects.toThrow(/missing\.jsonl: cannot read dataset/);
  });
});

describe('loadDataset (Parquet)', () => {
  it('reads files from an independent writer and names the bad row', () => {
    // Through tsx in a child process: see fixtures/load-dataset.ts for why not in-process.
    const fixtures = join(__dirname, 'fixtures');
    const files = ['good', 'empty-prompt', 'numeric-reference', 'invalid-utf8'].map((f) =>
      join(fixtures, `${f}.parquet`),
    );
    const out = execFileSync(
      process.execPath,
      [require.resolve('tsx/cli'), join(fixtures, 'load-dataset.ts'), ...files],
      {
        encoding: 'utf8',
      },
    );
    const [good, emptyPrompt, numericReference, invalidUtf8] = out
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    // Written rows (make-parquet.mjs): row 3 repeats row 1 and is dropped; nulls mean absent.
    expect(good.rows).toEqual([
      { id: 'p1', prompt: 'What is 2+2?', reference: '4', taskType: 'math', trace: '2+2=4.' },
      {
        id: rowId('Describe a red fox.', 'The red fox is quick.'),
        prompt: 'Describe a red fox.',
        reference: 'The red fox is quick.',
        taskType: 'writing',
      },
      { id: 'p4', prompt: 'Name a colour.', reference: 'Blue.', taskType: 'writing', trace: 'Wait, pick one.' },
    ]);
    expect(emptyPrompt.error).toBe(`${files[1]}: row 2: field 'prompt' must be a non-empty string`);
    expect(numericReference.error).toBe(`${files[2]}: row 1: field 'reference' must be a non-empty string`);
    // Catches: bytes that are not UTF-8 decoded to U+FFFD and trained on.
    expect(invalidUtf8.error).toBe(`${files[3]}: row 2: field 'reference' is not valid UTF-8`);
  });
});

describe('parseRecords (what the Parquet reader returns)', () => {
  // Catches: INT64 ids (bigint) or INT32 ids not turned into strings, or nulls taken as values.
  it('stringifies numeric and bigint ids and treats nulls as absent', () => {
    const records = [
      { id: 5n, prompt: 'p1', reference: 'r1', taskType: null, trace: null },
      { id: 7, prompt: 'p2', reference: 'r2', taskType: 'math', trace: 't' },
    ];
    expect(parseRecords(records, '/data/rows.parquet')).toEqual([
      { row: { id: '5', prompt: 'p1', reference: 'r1', taskType: 'writing' }, where: '/data/rows.parquet: row 1' },
      {
        row: { id: '7', prompt: 'p2', reference: 'r2', taskType: 'math', trace: 't' },
        where: '/data/rows.parquet: row 2',
      },
    ]);
  });

  // Catches: rows numbered from 0 (or not at all) in errors.
  it('names the 1-based row of a bad record', () => {
    const records = [
      { prompt: 'p', reference: 'r' },
      { prompt: 'q', reference: 'r' },
      { prompt: 'x', reference: 3n },
    ];
    expect(() => parseRecords(records, '/data/bad.parquet')).toThrow(
      "/data/bad.parquet: row 3: field 'reference' must be a non-empty string",
    );
  });
});

describe('splitDataset', () => {
  const rows: DatasetRow[] = Array.from({ length: 20 }, (_, i) => ({
    id: `r${i}`,
    prompt: `p${i}`,
    reference: `r${i}`,
    taskType: i < 15 ? 'writing' : 'math',
  }));

  it('is deterministic, stratified by task type, and keeps input order', () => {
    const a = splitDataset(rows, 0.2, 1);
    expect(splitDataset(rows, 0.2, 1)).toEqual(a);
    // writing: round(15·0.2) = 3; math: round(5·0.2) = 1.
    expect(a.eval.filter((r) => r.taskType === 'writing')).toHaveLength(3);
    expect(a.eval.filter((r) => r.taskType === 'math')).toHaveLength(1);
    expect(a.train).toHaveLength(16);
    expect([...a.train, ...a.eval].map((r) => r.id).sort()).toEqual(rows.map((r) => r.id).sort());
    const order = (part: DatasetRow[]) => part.map((r) => Number(r.id.slice(1)));
    expect(order(a.eval)).toEqual([...order(a.eval)].sort((x, y) => x - y));
    // Another seed picks a different eval set (fixed hashes: this is not luck-dependent across runs).
    expect(splitDataset(rows, 0.2, 2).eval.map((r) => r.id)).not.toEqual(a.eval.map((r) => r.id));
  });

  it('does not depend on the rows around it, and keeps at least one eval row per type', () => {
    // Same ids in reverse order → same eval set.
    const reversed = splitDataset([...rows].reverse(), 0.2, 1)
      .eval.map((r) => r.id)
      .sort();
    expect(reversed).toEqual(
      splitDataset(rows, 0.2, 1)
        .eval.map((r) => r.id)
        .sort(),
    );
    // Two math rows at 0.2: round(0.4) = 0, raised to 1; a single row stays in train.
    const two = splitDataset(rows.slice(15, 17), 0.2, 3);
    expect([two.train.length, two.eval.length]).toEqual([1, 1]);
    expect(splitDataset(rows.slice(0, 1), 0.5, 3).eval).toEqual([]);
  });
});

describe('splitDataset rules', () => {
  const rows: DatasetRow[] = Array.from({ length: 10 }, (_, i) => ({
    id: `id${i}`,
    prompt: `p${i}`,
    reference: 'r',
    taskType: 'writing',
  }));

  // Catches: a reversed or otherwise different order than sha256(seed:id) deciding the eval rows.
  it('takes the first rows in sha256(seed:id) order', () => {
    // Independent derivation of the rule: hash every id, sort the hex digests, take round(10·0.3) = 3.
    const key = (id: string) => createHash('sha256').update(`7:${id}`).digest('hex');
    const want = rows
      .map((r) => r.id)
      .sort((a, b) => (key(a) < key(b) ? -1 : 1))
      .slice(0, 3);
    expect(
      splitDataset(rows, 0.3, 7)
        .eval.map((r) => r.id)
        .sort(),
    ).toEqual([...want].sort());
  });

  // Catches: evalFraction 0 still moving one row per type to eval, or bounds not checked.
  it('evalFraction 0 keeps every row in train; values outside [0, 1) are refused', () => {
    expect(splitDataset(rows, 0, 1)).toEqual({ train: rows, eval: [] });
    for (const bad of [-0.1, 1, 1.5, NaN]) {
      expect(() => splitDataset(rows, bad, 1)).toThrow(`splitDataset: evalFraction ${bad} not in [0, 1)`);
    }
  });
});

describe('prepareDataset', () => {
  const data = {
    source: 'synthetic',
    synthetic: { writing: 10, math: 5, seed: 4 },
    evalFraction: 0.2,
    maxPromptTokens: 256,
  };

  it('generates, splits and hashes the synthetic family reproducibly', async () => {
    const a = await prepareDataset(data, 9);
    const b = await prepareDataset(data, 9);
    expect(a).toEqual(b);
    expect(a.counts).toEqual({ total: 15, train: 12, eval: 3, duplicates: 0, tooLong: 0, writing: 10, math: 5 });
    // The hash covers every kept row in generation order, before the split.
    expect(a.hash).toBe(datasetHash(syntheticTasks(data.synthetic)));
    const other = await prepareDataset({ ...data, synthetic: { ...data.synthetic, seed: 5 } }, 9);
    expect(other.hash).not.toBe(a.hash);
  });

  it('drops prompts over maxPromptTokens with an injected counter, and reads relative paths from baseDir', async () => {
    // Character count as the counter: "What is a+b?" is 12 characters, "Describe a <c> <a>." at least 19.
    const short = await prepareDataset({ ...data, maxPromptTokens: 12 }, 9, { promptTokens: (p) => p.length });
    expect(short.counts).toMatchObject({ total: 5, tooLong: 10, writing: 0, math: 5 });
    write(
      'rel.jsonl',
      jsonl({ prompt: 'p', reference: 'r' }, { prompt: 'q', reference: 's' }, { prompt: 'p', reference: 'r' }),
    );
    const rel = await prepareDataset({ ...data, source: 'rel.jsonl' }, 1, { baseDir: dir });
    expect(rel.counts).toMatchObject({ total: 2, duplicates: 1, train: 1, eval: 1 });
  });

  it('hashes content and order', () => {
    const r: DatasetRow[] = [
      { id: 'a', prompt: 'p', reference: 'r', taskType: 'writing' },
      { id: 'b', prompt: 'q', reference: 's', taskType: 'math' },
    ];
    expect(datasetHash(r)).toBe(datasetHash(r.map((x) => ({ ...x }))));
    expect(datasetHash([r[1]!, r[0]!])).not.toBe(datasetHash(r));
  });
});
