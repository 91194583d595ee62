/**
 * Bad input at the command line is refused early, clearly, and leaves nothing recorded: unknown flags
 * and extra arguments, bad environment variables, run ids that could escape the artifact store or
 * exceed Temporal's limits, and everything `train` can check from the config and its files (a dataset
 * row, a vocabulary smaller than the tokenizer, an unknown execution provider, SFT with nothing to learn).
 * Also: JSON output is complete however large (it drains before the process exits).
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { createDb, type DbHandle } from '../../db/client';
import { createRun } from '../../db/queries';
import { configHash, parseRunConfig } from '../../config/load';
import { syntheticTasks } from '../../opera/synthetic';
import {
  pool,
  removeTmpDirs,
  CLI,
  ROOT,
  runCli,
  smokeYaml,
  terminateOpenRuns,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
} from './helpers';

jest.setTimeout(240_000);

const env = testEnv(`cli-${process.pid}-`);
let db: pg.Pool;
let dbh: DbHandle;

beforeAll(() => {
  db = pool();
  dbh = createDb(process.env.DATABASE_URL);
});

afterAll(async () => {
  await dbh?.close();
  await db?.end();
  removeTmpDirs();
});

const runCount = async () => (await db.query<{ n: number }>('select count(*)::int as n from runs')).rows[0]!.n;

test.each([
  [['train', 'x.yaml', '--wiat'], /train: Unknown option '--wiat'/],
  [['runs', '--bogus-flag'], /runs: Unknown option '--bogus-flag'/],
  [['show', 'a', 'b'], /show: unexpected argument "b"/],
  [['show'], /show needs <run>/],
  [['frobnicate'], /unknown command "frobnicate"/],
])('%j is a usage error (exit 64) that shows the usage', async (args, message) => {
  const res = await runCli(args as string[], env, 60_000);
  expect(res.code).toBe(64);
  expect(res.stderr).toMatch(message);
  expect(res.stderr).toContain('usage:');
});

test.each([
  ['OPERAFLOW_HEARTBEAT_TIMEOUT', '0', /OPERAFLOW_HEARTBEAT_TIMEOUT="0" must be a number of seconds from 2 to 3600/],
  ['OPERAFLOW_HEARTBEAT_TIMEOUT', 'abc', /OPERAFLOW_HEARTBEAT_TIMEOUT="abc" must be a number of seconds/],
  ['OPERAFLOW_LOG_LEVEL', 'bogus', /OPERAFLOW_LOG_LEVEL="bogus" must be one of TRACE, DEBUG, INFO, WARN, ERROR/],
  ['OPERAFLOW_ORT_THREADS', '1.5', /OPERAFLOW_ORT_THREADS="1.5" must be a whole number from 1 to 1024/],
  ['DATABASE_URL', 'not a url', /DATABASE_URL \(value not shown\) is malformed: not a URL/],
])('%s=%s is refused at start, naming the variable', async (name, value, message) => {
  const res = await runCli(['runs'], { ...env, [name]: value }, 60_000);
  expect(res.code).toBe(1);
  expect(res.stderr).toMatch(message);
  expect(res.stderr).not.toMatch(/unreachable/);
});

describe('train refuses, before recording anything', () => {
  const dir = tmpDir();
  const yaml = (data?: string) =>
    smokeYaml({ name: 'cli', artifacts: join(dir, 'artifacts'), ...(data ? { data } : {}) });

  test.each([
    ['../../x', /--id "\.\.\/\.\.\/x": a run id may hold only letters, digits/],
    ['/etc/passwd', /a run id may hold only/],
    ['zz/../other-run', /a run id may hold only/],
    ['', /a run id must not be empty/],
    ['x'.repeat(300), /a run id has 300 characters; at most 200/],
  ])('the run id %j', async (id, message) => {
    const before = await runCount();
    const res = await runCli(['train', writeConfig(yaml()), `--id=${id}`], env, 60_000);
    expect(res.code).toBe(64);
    expect(res.stderr).toMatch(message);
    expect(await runCount()).toBe(before);
  });

  test('what only the files show: a bad dataset row, a small vocabulary, an unknown provider, SFT with nothing to learn', async () => {
    const rows = syntheticTasks({ writing: 6, math: 6, seed: 1 }).map(({ id, prompt, reference, taskType }) =>
      JSON.stringify({ id, prompt, reference, taskType }),
    );
    const plain = join(dir, 'plain.jsonl'); // no traces: nothing for cold-start SFT to learn
    writeFileSync(plain, `${rows.join('\n')}\n`);
    const broken = join(dir, 'broken.jsonl');
    writeFileSync(broken, `${[...rows.slice(0, 2), '{"prompt": "Describe a yak."}', ...rows.slice(2)].join('\n')}\n`);
    const before = await runCount();
    const cases: [string, RegExp][] = [
      [
        yaml(`{ source: ${JSON.stringify(broken)}, maxPromptTokens: 64 }`),
        new RegExp(`data\\.source: ${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: field 'reference'`),
      ],
      [
        yaml(`{ source: ${JSON.stringify(plain)}, maxPromptTokens: 64 }`),
        /coldStart\.enabled: the dataset's rows carry no `trace` or `response`/,
      ],
      [
        yaml().replace(
          'model: { preset: tiny, tokenizer: byte }',
          'model: { preset: tiny, tokenizer: byte, config: { vocab_size: 100 } }',
        ),
        /model\.config\.vocab_size: 100 is smaller than the tokenizer's 264 tokens/,
      ],
      [
        yaml().replace('runtime: {', 'runtime: { providers: [bogus],'),
        /runtime\.providers: execution provider "bogus" is unavailable/,
      ],
    ];
    for (const [text, message] of cases) {
      const res = await runCli(['train', writeConfig(text)], env, 60_000);
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(message);
    }
    expect(await runCount()).toBe(before);
  });
});

/** 50 recorded runs: `runs --json` then prints more than a pipe buffer holds. */
async function recordManyRuns(tag: string): Promise<void> {
  const config = parseRunConfig(smokeYaml({ name: 'many', artifacts: tmpDir() }), 'many.yaml');
  for (let k = 0; k < 50; k++) {
    const id = `cli-${process.pid}-${tag}-${k}`;
    await createRun(dbh.db, {
      id,
      name: 'many',
      status: 'completed',
      config,
      configHash: configHash(config),
      codeVersion: 'test',
      seed: 1,
      workflowId: id,
    });
  }
}

test('runs --json through a pipe is complete JSON, however large', async () => {
  await recordManyRuns('many');
  const res = await runCli(['runs', '--json'], env, 60_000);
  expect(res.code).toBe(0);
  expect(res.stdout.length).toBeGreaterThan(64 * 1024);
  expect((JSON.parse(res.stdout) as unknown[]).length).toBe(50);
});

test('a reader that stops early (runs | head -1) ends the command quietly, exit 0', async () => {
  await recordManyRuns('head'); // writes go on after the reader has gone
  const child = spawn(process.execPath, [...CLI, 'runs'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((r) => child.on('close', r));
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
});

// Catches: a run whose task queues have no worker waiting silently under `train --wait`.
test('train --wait says which task queues no worker polls', async () => {
  const prefix = `cli-${process.pid}-nobody-`;
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'scripts', 'operaflow.ts'),
      'train',
      writeConfig(smokeYaml({ name: 'unserved', artifacts: tmpDir() })),
      '--wait',
    ],
    {
      cwd: ROOT,
      env: testEnv(prefix),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const runId = await waitFor('the started line', async () => /started run (\S+)/.exec(output)?.[1], 60_000, 100);
  try {
    await waitFor(
      'the queue warning',
      async () => (/no worker polls task queue/.test(output) ? true : undefined),
      30_000,
      200,
    );
    expect(output).toContain(`no worker polls task queue "${prefix}train" (workflow)`);
    expect(output).toContain(`"${prefix}rollout" (rollout and scoring stages)`);
    expect(output).toContain(`OPERAFLOW_QUEUE_PREFIX "${prefix}"`);
  } finally {
    child.kill('SIGKILL');
    await terminateOpenRuns([runId]);
  }
});
