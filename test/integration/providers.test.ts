/**
 * Execution providers end to end, on this machine's CPU:
 * - a worker's OPERAFLOW_PROVIDERS decides what its stages run on, whatever the run's
 *   `runtime.providers` asks, and every attempt records the providers its models used (`show` prints them);
 * - a run that asks for `cuda` on a worker that cannot run it fails the stage with the reason in words,
 *   recorded on the attempt, and blocks once its attempts are used up;
 * - a worker told to use `cuda` where it cannot refuses to start, with the reason.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { RunSummary } from '../../db/queries';
import { cudaInstallProblem } from '../../engine/cuda-libs';
import { CLI, ROOT, integrationFile, lastLine, runCli, smokeYaml, tmpDir, writeConfig } from './helpers';

jest.setTimeout(240_000);

const cpuWorkers = integrationFile('providers-cpu', { OPERAFLOW_PROVIDERS: 'cpu' });
const plainWorkers = integrationFile('providers-plain');

const askingForCuda = (name: string, maxStageAttempts: number) => {
  const dir = tmpDir();
  return writeConfig(
    smokeYaml({
      name,
      artifacts: join(dir, 'artifacts'),
      grpo: '{ iterations: 1, promptsPerIteration: 4, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 24 }',
      runtime: `{ rolloutShards: 1, continueAsNewEvery: 10, maxStageAttempts: ${maxStageAttempts}, providers: [cuda, cpu], artifacts: ${JSON.stringify(join(dir, 'artifacts'))} }`,
    }),
  );
};

test("a worker's OPERAFLOW_PROVIDERS runs the stages, and each attempt records the providers it used", async () => {
  const { env, db, started } = cpuWorkers;
  await cpuWorkers.worker();
  const result = await runCli(['train', askingForCuda('providers-cpu', 2), '--wait', '--json'], env);
  const summary = JSON.parse(lastLine(result.stdout)) as RunSummary;
  started.push(summary.id);
  expect(summary.status).toBe('completed');
  const { rows } = await db.query<{ stage: string; providers: string | null }>(
    'select distinct stage, providers from stage_attempts where run_id = $1 order by stage',
    [summary.id],
  );
  expect(rows).toEqual(
    ['coldStartSft', 'evaluate', 'prepareDataset', 'reward', 'rollout', 'score', 'update']
      .sort()
      .map((stage) => ({ stage, providers: ['prepareDataset', 'reward'].includes(stage) ? null : 'cpu' })),
  );
  const shown = await runCli(['show', summary.id], env);
  expect(shown.stdout).toMatch(/rollout it1 s0 +completed +#1 completed [\d.]+s @\S+ on cpu/);
});

test('a run asking for cuda on a worker without a GPU blocks with the reason recorded on the attempt', async () => {
  const { env, db, started } = plainWorkers;
  await plainWorkers.worker();
  const waited = await runCli(['train', askingForCuda('providers-cuda', 1), '--wait', '--json'], env);
  const summary = JSON.parse(lastLine(waited.stdout)) as RunSummary;
  const runId = summary.id;
  started.push(runId);
  expect(waited.code).toBe(2);
  expect(summary.status).toBe('blocked');
  const { rows } = await db.query<{ stage: string; providers: string; error: string }>(
    "select stage, providers, error from stage_attempts where run_id = $1 and status = 'failed'",
    [runId],
  );
  expect(rows).toHaveLength(1);
  expect(rows[0]!.providers).toBe('cuda,cpu');
  // With the CUDA libraries installed (CI installs them) the reason is the missing driver; without, the setup.
  const reason =
    (await cudaInstallProblem()) === undefined ? /no NVIDIA driver on this machine/ : /run `npm run gpu:setup`/;
  expect(rows[0]!.error).toMatch(/^execution provider "cuda"/);
  expect(rows[0]!.error).toMatch(reason);
});

test('a worker told to use cuda where it cannot refuses to start, saying why', () => {
  const r = spawnSync(process.execPath, [...CLI, 'worker'], {
    cwd: ROOT,
    env: { ...plainWorkers.env, OPERAFLOW_PROVIDERS: 'cuda,cpu' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(
    /OPERAFLOW_PROVIDERS=cuda,cpu: execution provider "cuda": (no NVIDIA driver|its libraries are not installed)/,
  );
  expect(r.stdout).not.toMatch(/polling/);
});
