/**
 * Sweeps through the real CLI, real worker processes, Temporal and PostgreSQL: `operaflow sweep` of
 * 2 seeds × 2 learning rates on the smoke config completes as 4 runs of one group even though its worker
 * is SIGKILLed mid-sweep (the sweep workflow is replayed by the next worker and starts the runs left);
 * `compare --group --json` reports the variants with the means and stds the metrics table gives;
 * `export-metrics --group` writes every run's metrics. Bad flags are refused, naming the flag or key,
 * and a sweep that cannot start leaves nothing recorded.
 */
import { Client, Connection } from '@temporalio/client';
import type pg from 'pg';
import { sweepWorkflowId } from '../../workflows/sweep';
import type { VariantReport } from '../../scripts/cli/compare-stats';
import {
  lastLine,
  pool,
  removeTmpDirs,
  runCli,
  smokeYaml,
  startWorker,
  terminateOpenRuns,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
  type WorkerProcess,
} from './helpers';

jest.setTimeout(1_200_000);

// A short heartbeat timeout: the killed worker's stages move to the new worker within seconds.
const env = testEnv(`sweep-${process.pid}-`, { OPERAFLOW_HEARTBEAT_TIMEOUT: '6' });
const group = `sweep-test-${process.pid}-${Date.now()}`;
const workers: WorkerProcess[] = [];
let db: pg.Pool;
let config: string;

beforeAll(() => {
  db = pool();
  config = writeConfig(smokeYaml({ name: 'sweep', artifacts: tmpDir() }));
});

afterAll(async () => {
  // The sweep first: its runs would otherwise be started again by it after they are terminated.
  await terminateOpenRuns([sweepWorkflowId(group)]);
  const { rows } = await db.query<{ id: string }>('select id from runs where "group" = $1', [group]);
  await terminateOpenRuns(rows.map((r) => r.id));
  for (const w of workers) await w.stop();
  await db?.end();
  removeTmpDirs();
});

const groupRows = async (g: string) =>
  (
    await db.query<{
      id: string;
      status: string;
      current_iteration: number;
      seed: number;
      lr: number;
      error: string | null;
    }>(
      `select id, status, current_iteration, seed, (config->'grpo'->>'lr')::float8 as lr, error
       from runs where "group" = $1 order by created_at, id`,
      [g],
    )
  ).rows;

describe('bad sweeps exit non-zero, naming the flag or key, and record nothing', () => {
  const cases: [string, string[], RegExp][] = [
    ['seeds', ['--seeds', 'x'], /--seeds "x": "x" is not a seed/],
    ['set', ['--set', 'nosuch.key=1'], /--set nosuch\.key: unknown key/],
    ['parallel', ['--parallel', '0'], /--parallel "0": expected a whole number of runs ≥ 1/],
  ];
  test.each(cases)('--%s', async (name, flags, message) => {
    const g = `bad-${name}-${process.pid}`;
    const res = await runCli(['sweep', config, '--group', g, ...flags], env, 60_000);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(message);
    expect(await groupRows(g)).toEqual([]);
  });

  test('a sweep whose workflow cannot start removes the runs it recorded', async () => {
    const g = `taken-${process.pid}-${Date.now()}`;
    // An open workflow with the sweep's id (on a queue nobody polls): starting the sweep is refused.
    const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    const client = new Client({ connection });
    const squatter = await client.workflow.start('sweepRun', {
      taskQueue: `nobody-${process.pid}`,
      workflowId: sweepWorkflowId(g),
      args: [{ group: g, runs: [], parallel: 1 }],
    });
    try {
      const res = await runCli(['sweep', config, '--group', g, '--seeds', '0-1'], env, 60_000);
      expect(res.code).toBe(1);
      expect(res.stderr).toContain(`could not start sweep ${sweepWorkflowId(g)} (nothing was recorded)`);
      expect(await groupRows(g)).toEqual([]);
    } finally {
      await squatter.terminate('test cleanup');
      await connection.close();
    }
  });
});

test('2 seeds × 2 learning rates complete as 4 runs of one group, though the worker is killed mid-sweep', async () => {
  workers.push(await startWorker(env));
  const t0 = Date.now();
  const sweeping = runCli(
    [
      'sweep',
      config,
      '--seeds',
      '0-1',
      '--set',
      'grpo.lr=0.001,0.002',
      '--parallel',
      '2',
      '--group',
      group,
      '--wait',
      '--json',
    ],
    env,
    1_000_000,
  );
  // Killed once the first runs are into RL, while the others wait their turn: the sweep must start them after.
  const atKill = await waitFor(
    'a run of the sweep at iteration 1',
    async () => {
      const rows = await groupRows(group);
      const stuck = rows.find((r) => r.status === 'blocked' || r.status === 'failed');
      if (stuck) throw new Error(`run ${stuck.id} is ${stuck.status}: ${stuck.error}\n${workers[0]!.output()}`);
      return rows.some((r) => r.current_iteration >= 1) ? rows : undefined;
    },
    300_000,
    200,
  );
  await workers[0]!.kill();
  expect(atKill.filter((r) => r.status === 'pending').length).toBeGreaterThanOrEqual(1);
  workers.push(await startWorker(env));

  const res = await sweeping;
  process.stderr.write(`sweep of 4 smoke runs (worker killed once): ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  if (res.code !== 0)
    throw new Error(`sweep exited ${res.code}\n${res.stderr}\n${res.stdout}\nworker:\n${workers.at(-1)!.output()}`);
  const printed = JSON.parse(lastLine(res.stdout)) as { group: string; runs: { id: string; status: string }[] };
  expect(printed.group).toBe(group);
  expect(printed.runs.map((r) => r.status)).toEqual(['completed', 'completed', 'completed', 'completed']);

  const rows = await groupRows(group);
  expect(rows.map((r) => [r.lr, r.seed, r.status, r.current_iteration])).toEqual([
    [0.001, 0, 'completed', 2],
    [0.001, 1, 'completed', 2],
    [0.002, 0, 'completed', 2],
    [0.002, 1, 'completed', 2],
  ]);
  expect(rows.map((r) => r.id)).toEqual(printed.runs.map((r) => r.id));
  // The sweep's workflow has closed as completed.
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  try {
    const description = await new Client({ connection }).workflow.getHandle(sweepWorkflowId(group)).describe();
    expect(description.status.name).toBe('COMPLETED');
  } finally {
    await connection.close();
  }
  // A second sweep into the same group is refused.
  const again = await runCli(['sweep', config, '--group', group], env, 60_000);
  expect(again.code).toBe(1);
  expect(again.stderr).toMatch(/the group already has 4 run\(s\)/);
});

/** Mean and sample std, computed here independently of the CLI. */
function expectStat(actual: { mean: number; std: number | null; n: number } | null | undefined, values: number[]) {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1));
  expect(actual?.n).toBe(values.length);
  expect(actual?.mean).toBeCloseTo(mean, 12);
  expect(actual?.std).toBeCloseTo(std, 12);
}

test('compare --group --json: two variants of two seeds, with the means and stds of the metrics table', async () => {
  const res = await runCli(['compare', '--group', group, '--json'], env);
  expect(res.code).toBe(0);
  const { variants } = JSON.parse(lastLine(res.stdout)) as { variants: VariantReport[] };
  expect(variants.map((v) => [v.label, v.overrides, v.seeds, v.runs.length, v.statuses])).toEqual([
    ['grpo.lr=0.001', { 'grpo.lr': 0.001 }, [0, 1], 2, { completed: 2 }],
    ['grpo.lr=0.002', { 'grpo.lr': 0.002 }, [0, 1], 2, { completed: 2 }],
  ]);
  const rows = await groupRows(group);
  for (const v of variants) {
    expect(v.runs).toEqual(rows.filter((r) => v.overrides['grpo.lr'] === r.lr).map((r) => r.id));
    const { rows: metrics } = await db.query<{ run_id: string; step: number; name: string; value: number }>(
      'select run_id, step, name, value from metrics where run_id = any($1) order by run_id, step',
      [v.runs],
    );
    const perRun = (name: string) => v.runs.map((id) => metrics.filter((m) => m.run_id === id && m.name === name));
    // Final: the value at the last step; best: the max of a reward, the min of a loss.
    const final = (name: string) => perRun(name).map((ms) => ms.at(-1)!.value);
    expectStat(v.metrics['eval/reward']!.final, final('eval/reward'));
    expectStat(
      v.metrics['eval/reward']!.best,
      perRun('eval/reward').map((ms) => Math.max(...ms.map((m) => m.value))),
    );
    expectStat(v.metrics['train/loss']!.final, final('train/loss'));
    expectStat(
      v.metrics['train/loss']!.best,
      perRun('train/loss').map((ms) => Math.min(...ms.map((m) => m.value))),
    );
    expectStat(v.metrics['sft/loss']!.final, final('sft/loss'));
    expect(v.metrics['train/lr']!.best).toBeNull();
    expect(Object.keys(v.metrics).sort()).toEqual([...new Set(metrics.map((m) => m.name))].sort());
    // Evaluation before RL is step 0 of eval/reward; after RL, its last step.
    expectStat(
      v.evalReward.before,
      perRun('eval/reward').map((ms) => ms[0]!.value),
    );
    expectStat(v.evalReward.after, final('eval/reward'));
  }
  // The same report for people.
  const human = await runCli(['compare', '--group', group], env);
  expect(human.code).toBe(0);
  expect(human.stdout).toContain('4 run(s) in 2 variant(s) (differing in grpo.lr)');
  expect(human.stdout).toMatch(/^eval\/reward ↑ +\S+ ± \S+ +\S+ ± \S+$/m);
  // Runs named one by one compare the same way.
  const byId = await runCli(['compare', ...rows.map((r) => r.id), '--json'], env);
  expect(JSON.parse(lastLine(byId.stdout))).toEqual({ variants });
});

test('export-metrics --group: every metric of every run of the group, run by run, exactly', async () => {
  const { rows } = await db.query<{ run_id: string; step: number; name: string; value: number }>(
    `select m.run_id, m.step, m.name, m.value from metrics m join runs r on r.id = m.run_id
     where r."group" = $1 order by r.created_at, r.id, m.step, m.name`,
    [group],
  );
  expect(new Set(rows.map((r) => r.run_id)).size).toBe(4);
  const csv = await runCli(['export-metrics', '--group', group], env);
  expect(csv.code).toBe(0);
  const [header, ...lines] = csv.stdout.trim().split('\n');
  expect(header).toBe('run,step,name,value');
  expect(lines.map((l) => l.split(','))).toEqual(rows.map((r) => [r.run_id, String(r.step), r.name, String(r.value)]));
  const jsonl = await runCli(['export-metrics', '--group', group, '--format', 'jsonl'], env);
  expect(
    jsonl.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as unknown),
  ).toEqual(rows.map((r) => ({ run: r.run_id, step: r.step, name: r.name, value: r.value })));
  // Exactly one of <run> and --group.
  const both = await runCli(['export-metrics', rows[0]!.run_id, '--group', group], env);
  expect(both.code).toBe(64);
  expect(both.stderr).toContain('export-metrics: give <run> or --group <name>, not both');
  expect((await runCli(['export-metrics'], env)).stderr).toContain('export-metrics needs <run> or --group <name>');
  expect((await runCli(['export-metrics', '--group', 'no-such-group'], env)).stderr).toContain(
    'no runs in group "no-such-group"',
  );
});
