/**
 * The smoke run end to end through the real CLI, a real worker process, Temporal and PostgreSQL:
 * `operaflow train configs/smoke.yaml --wait --json` completes, and its metrics, samples and artifacts
 * are in the database. Also: bad configs are rejected by `train` with messages naming the key.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  lastLine,
  runCli,
  tmpDir,
  writeConfig,
  smokeYaml,
  type WorkerProcess,
  runIdOf,
  integrationFile,
} from './helpers';
import type { RunSummary } from '../../db/queries';
import type { VerifyReport } from '../../activities/verify';
import { expectSameRecord, runRecord } from './records';

jest.setTimeout(240_000);

const file = integrationFile('smoke');
const { env, db, started } = file;
let worker: WorkerProcess | undefined;

test('the smoke run completes end to end via the CLI, with metrics, samples and artifacts in PostgreSQL', async () => {
  worker = await file.worker();
  const artifactsDir = tmpDir();
  const config = writeConfig(smokeYaml({ name: 'smoke-e2e', artifacts: artifactsDir }));
  const t0 = Date.now();
  const res = await runCli(['train', config, '--wait', '--json'], env);
  const seconds = (Date.now() - t0) / 1000;
  try {
    started.push(runIdOf(res.stdout));
  } catch {
    // no summary line: the run was never started
  }
  if (res.code !== 0)
    throw new Error(`train exited ${res.code}\n${res.stderr}\n${res.stdout}\nworker:\n${worker.output()}`);
  const summary = JSON.parse(lastLine(res.stdout)) as RunSummary;
  process.stderr.write(`smoke run ${summary.id}: ${seconds.toFixed(1)} s\n`);
  expect(seconds).toBeLessThan(120);
  expect(summary.status).toBe('completed');
  expect(summary.currentIteration).toBe(2);

  // Every stage of every iteration completed, each in one attempt (nothing failed here).
  const completed = summary.stages
    .filter((s) => s.status === 'completed')
    .map((s) => `${s.stage}/${s.iteration}/${s.shard}`);
  for (const key of [
    'prepareDataset/0/0',
    'coldStartSft/0/0',
    'evaluate/0/0',
    'rollout/1/0',
    'rollout/1/1',
    'score/2/1',
    'reward/2/0',
    'update/2/0',
    'evaluate/2/0',
  ]) {
    expect(completed).toContain(key);
  }

  const { rows: counts } = await db.query<{ split: string; iteration: number; n: number }>(
    'select split, iteration, count(*)::int as n from samples where run_id = $1 group by split, iteration order by split, iteration',
    [summary.id],
  );
  // 4 prompts × group of 4 per iteration; 4 eval prompts before RL, after iteration 1 and after 2.
  expect(counts).toEqual([
    { split: 'eval', iteration: 0, n: 4 },
    { split: 'eval', iteration: 1, n: 4 },
    { split: 'eval', iteration: 2, n: 4 },
    { split: 'train', iteration: 1, n: 16 },
    { split: 'train', iteration: 2, n: 16 },
  ]);
  const { rows: sample } = await db.query('select * from samples where run_id = $1 and split = $2 limit 1', [
    summary.id,
    'train',
  ]);
  expect(sample[0]).toMatchObject({
    reward: expect.any(Number),
    ppl: expect.any(Number),
    advantage: expect.any(Number),
    logp_full: expect.any(Number),
  });

  const { rows: metricNames } = await db.query<{ name: string }>(
    'select distinct name from metrics where run_id = $1',
    [summary.id],
  );
  const names = metricNames.map((m) => m.name);
  for (const name of [
    'sft/loss',
    'reward/mean',
    'reward/ema',
    'train/loss',
    'train/kl',
    'eval/reward',
    'eval/ref_logp',
    'eval/exact_match',
  ])
    expect(names).toContain(name);

  const { rows: artifacts } = await db.query<{ kind: string; uri: string; sha256: string; bytes: number }>(
    'select kind, uri, sha256, bytes from artifacts where run_id = $1',
    [summary.id],
  );
  const kinds = new Set(artifacts.map((a) => a.kind));
  for (const kind of ['dataset', 'checkpoint', 'optimizer', 'rollouts', 'scores', 'rewards', 'eval'])
    expect(kinds).toContain(kind);
  for (const a of artifacts) {
    expect(a.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(existsSync(fileURLToPath(a.uri))).toBe(true);
  }

  // The summary the CLI prints is the one `show --json` gives.
  const show = await runCli(['show', summary.id, '--json'], env);
  expect(show.code).toBe(0);
  expect(JSON.parse(lastLine(show.stdout))).toMatchObject({ id: summary.id, status: 'completed' });
  // Continue-as-new every iteration still ends with the evaluation before and after RL in the summary.
  expect(summary.summary).toMatchObject({ evalBefore: { iteration: 0 }, evalAfter: { iteration: 2 } });
});

// Catches: rows a crash lost (or a completed attempt left 'running') going unnoticed; a changed file
// passing; --repair re-deriving something other than what the stages recorded.
test('operaflow verify finds missing rows and changed files, and --repair restores the rows exactly', async () => {
  const runId = started[0]!;
  const verify = async (...flags: string[]) => {
    const res = await runCli(['verify', runId, '--json', ...flags], env);
    return { code: res.code, report: JSON.parse(lastLine(res.stdout)) as VerifyReport };
  };
  const clean = await verify();
  expect(clean.report.problems).toEqual([]);
  expect(clean.code).toBe(0);
  expect(clean.report.checked.stages).toBeGreaterThanOrEqual(15);
  const before = await runRecord(db, runId);

  // What a crash could lose, and a file changed behind the store's back.
  await db.query("delete from samples where run_id = $1 and split = 'train' and iteration = 1 and sample_index < 2", [
    runId,
  ]);
  await db.query("delete from samples where run_id = $1 and split = 'eval' and iteration = 2", [runId]);
  await db.query(
    "delete from metrics where run_id = $1 and ((step = 2 and name = 'reward/mean') or name = 'eval/reward')",
    [runId],
  );
  await db.query(
    "delete from artifacts where run_id = $1 and ((kind = 'optimizer' and iteration = 1) or (kind = 'eval' and iteration = 0) or kind = 'dataset')",
    [runId],
  );
  await db.query(
    `insert into stage_attempts (run_id, stage, iteration, shard, attempt, status)
     values ($1, 'rollout', 2, 0, 99, 'running')`,
    [runId],
  );
  const { rows } = await db.query<{ uri: string }>(
    "select uri from artifacts where run_id = $1 and kind = 'scores' and iteration = 2 and name = 'shard-1.json'",
    [runId],
  );
  const changed = fileURLToPath(rows[0]!.uri);
  const original = readFileSync(changed);
  writeFileSync(changed, Buffer.concat([original, Buffer.from(' ')]));

  const damaged = await verify();
  expect(damaged.code).toBe(1);
  const said = damaged.report.problems.map((p) => `${p.where}: ${p.problem} [${p.repairable}]`);
  for (const expected of [
    /^reward iteration 1: 8 of 16 train samples missing \[true\]/,
    /^evaluate iteration 2: 4 of 4 eval samples missing \[true\]/,
    /^reward iteration 2: metric reward\/mean at step 2 missing/,
    /^evaluate iteration 0: metric eval\/reward at step 0 missing/,
    /^update iteration 1: artifact optimizer\/1\/optimizer.safetensors has no row \[true\]/,
    /^evaluate iteration 0: artifact eval\/0\/eval.json has no row \[true\]/,
    /^prepareDataset iteration 0: artifact dataset\/0\/dataset.json has no row \[true\]/,
    /^rollout iteration 2 shard 0: attempt 99 is still 'running' in a completed run \[true\]/,
    /^artifact scores\/2\/shard-1.json: file .* has sha256 [0-9a-f]{64}, recorded [0-9a-f]{64} \[false\]/,
  ])
    expect(said).toContainEqual(expect.stringMatching(expected));
  expect(said).toHaveLength(11); // the nine above, and eval/reward at steps 1 and 2 (one problem per stage)

  const repaired = await verify('--repair');
  expect(repaired.code).toBe(1); // the changed file cannot be re-derived
  expect(repaired.report.problems.filter((p) => !p.repaired).map((p) => p.where)).toEqual([
    'artifact scores/2/shard-1.json',
  ]);
  writeFileSync(changed, original);
  expect((await verify()).code).toBe(0);
  const { rows: lost } = await db.query<{ status: string }>(
    'select status from stage_attempts where run_id = $1 and attempt = 99',
    [runId],
  );
  expect(lost).toEqual([{ status: 'lost' }]);
  // Bit for bit what the stages recorded.
  expectSameRecord('after verify --repair', await runRecord(db, runId), before);
});

// Catches: metrics lost, reordered or rounded on the way out (a CSV re-read must give the recorded doubles).
test('export-metrics writes every recorded metric as CSV or JSONL, exactly', async () => {
  const runId = started[0]!;
  const { rows } = await db.query<{ step: number; name: string; value: number }>(
    'select step, name, value from metrics where run_id = $1 order by step, name',
    [runId],
  );
  expect(rows.length).toBeGreaterThan(20);
  const csv = await runCli(['export-metrics', runId], env);
  expect(csv.code).toBe(0);
  const [header, ...lines] = csv.stdout.trim().split('\n');
  expect(header).toBe('run,step,name,value');
  expect(lines.map((l) => l.split(','))).toEqual(rows.map((r) => [runId, String(r.step), r.name, String(r.value)]));
  const jsonl = await runCli(['export-metrics', runId, '--format', 'jsonl'], env);
  expect(
    jsonl.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as unknown),
  ).toEqual(rows.map((r) => ({ run: runId, ...r })));
  expect((await runCli(['export-metrics', runId, '--format', 'xml'], env)).code).toBe(64);
  expect((await runCli(['export-metrics', 'no-such-run'], env)).stderr).toContain('no run with id "no-such-run"');
});

describe('train rejects bad configs with a message naming the key', () => {
  const cases: [string, string, RegExp][] = [
    ['unknown key', 'name: x\ngrpo:\n  groupSiz: 4\n', /grpo\.groupSiz: unknown key/],
    ['wrong type', 'name: x\ngrpo:\n  iterations: two\n', /grpo\.iterations/],
    ['out of range', 'name: x\ngrpo:\n  clip: 1.5\n', /grpo\.clip/],
    ['missing required key', 'seed: 3\n', /name/],
    ['bad enum', 'name: x\nmodel:\n  preset: huge\n', /model\.preset/],
    ['missing dataset file', 'name: x\ndata:\n  source: /nonexistent/rows.jsonl\n', /data\.source: file not found/],
    [
      'sequences longer than the model',
      'name: x\nmodel:\n  preset: tiny\ngrpo:\n  maxNewTokens: 512\n',
      /grpo\.maxNewTokens: .*max_position_embeddings/,
    ],
  ];
  test.each(cases)('%s', async (_label, yaml, message) => {
    const res = await runCli(['train', writeConfig(yaml)], env, 60_000);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(message);
  });
});
