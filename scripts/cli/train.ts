/** `operaflow train <config.yaml> [--wait] [--json] [--id <run>] [--group <name>]`: validate, record, start (or attach to) a run. */
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { appendEvent, createRun, deleteRun, getRun, runSummary } from '../../db/queries';
import type { NewRun } from '../../db/schema';
import { preflight } from '../../config/preflight';
import { isS3 } from '../../activities/store';
import { checkBucket, parseS3Uri } from '../../activities/store-s3';
import { groupProblem, runIdProblem } from '../../config/run-id';
import { configHash, loadRunConfig, type RunConfig } from '../../config/load';
import { trainingRun, type TrainingRunInput } from '../../workflows/trainingRun';
import { UsageError, actor, codeVersion, connect, printOut, type Services } from './connect';
import { printEvalComparison } from './inspect';
import { planOf, taskQueues } from './plan';
import { waitForRun } from './wait';

/** Paths in the config are relative to the directory `train` runs in; workers get absolute ones. */
export function resolvePaths(config: RunConfig): RunConfig {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(p));
  const out: RunConfig = structuredClone(config);
  if (out.data.source !== 'synthetic') {
    out.data.source = abs(out.data.source);
    if (!existsSync(out.data.source)) throw new Error(`data.source: file not found: ${out.data.source}`);
  }
  if (out.model.checkpoint) out.model.checkpoint = abs(out.model.checkpoint);
  if (out.model.tokenizer !== 'byte') out.model.tokenizer = abs(out.model.tokenizer);
  if (out.coldStart.teacher.checkpoint) out.coldStart.teacher.checkpoint = abs(out.coldStart.teacher.checkpoint);
  // A directory becomes absolute (workers may run elsewhere); an s3:// or file:// URI stays as written.
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(out.runtime.artifacts)) out.runtime.artifacts = abs(out.runtime.artifacts);
  return out;
}

/** The readable part of a run id: the run's name, lower-cased, in letters, digits and dashes. */
export const runSlug = (name: string): string =>
  name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 40) || 'run';

/** A fresh run id: the name's slug, the time to the second and a random suffix (also a sweep's default group). */
export function newRunId(name: string): string {
  const slug = runSlug(name);
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${slug}-${stamp}-${Math.random().toString(36).slice(2, 6)}`;
}

/** The `runs` row of a new run (status pending) that `train` and `sweep` record before starting its workflow. */
export const newRunRow = (runId: string, config: RunConfig, group: string | null, code = codeVersion()): NewRun => ({
  id: runId,
  name: config.name,
  group,
  status: 'pending',
  config: config as unknown as Record<string, unknown>,
  configHash: configHash(config),
  codeVersion: code,
  seed: config.seed,
  workflowId: runId,
});

/** The problems `preflight` finds, as one error (a run is recorded only when there are none). */
export async function checkPreflight(config: RunConfig, file: string, prefix = ''): Promise<void> {
  const problems = await preflight(config, file);
  // The bucket must exist and take these credentials now, not when the first stage writes to it.
  if (isS3(config.runtime.artifacts)) {
    const bucket = await checkBucket(parseS3Uri(config.runtime.artifacts));
    if (bucket) problems.push(`runtime.artifacts: ${bucket}`);
  }
  if (problems.length) throw new Error(problems.map((p) => `${prefix}${p}`).join('\n'));
}

/** Starts workflow `trainingRun` with id = run id; `reuse` allows a closed run's id to start again (resume, cancel). */
export async function startWorkflow(
  s: Services,
  runId: string,
  input: TrainingRunInput,
  reuse: boolean,
): Promise<WorkflowHandle<typeof trainingRun>> {
  return s.client.workflow.start(trainingRun, {
    taskQueue: taskQueues().train,
    workflowId: runId,
    args: [input],
    // A second `train --id` of a live run attaches to it; a closed run may be started again (resume).
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: reuse ? 'ALLOW_DUPLICATE' : 'REJECT_DUPLICATE',
  });
}

export async function train(
  file: string,
  flags: { wait?: boolean; json?: boolean; id?: string; group?: string },
): Promise<number> {
  if (flags.group !== undefined) {
    const problem = groupProblem(flags.group);
    if (problem) throw new UsageError(`--group ${JSON.stringify(flags.group.slice(0, 60))}: a group ${problem}`);
  }
  const config = resolvePaths(loadRunConfig(file));
  const json = Boolean(flags.json);
  const runId = flags.id ?? newRunId(config.name);
  const idProblem = runIdProblem(runId);
  if (idProblem)
    throw new UsageError(
      `--id ${JSON.stringify(runId.length > 60 ? `${runId.slice(0, 60)}…` : runId)}: a run id ${idProblem}`,
    );
  const s = await connect();
  try {
    // A new run is checked against its files first; attaching to a recorded one re-checks nothing.
    if (!(await getRun(s.db.db, runId))) await checkPreflight(config, file);
    const { run, created } = await createRun(s.db.db, newRunRow(runId, config, flags.group ?? null));
    if (!created && run.configHash !== configHash(config)) {
      throw new Error(
        `run ${runId} exists with a different config (hash ${run.configHash.slice(0, 12)}); choose another --id`,
      );
    }
    await startWorkflow(s, runId, { runId, plan: planOf(config) }, false).catch(async (err: Error) => {
      // REJECT_DUPLICATE: the run exists and its workflow has closed: attach to the result instead.
      if (!created && /already started|AlreadyStarted/i.test(err.message)) return;
      // Recorded and started together, or neither: a run row without its workflow would stay pending forever.
      if (created) await deleteRun(s.db.db, runId);
      throw new Error(`could not start the workflow of run ${runId} (nothing was recorded): ${err.message}`, {
        cause: err,
      });
    });
    await appendEvent(s.db.db, runId, created ? 'started' : 'attached', actor(), {
      config: file,
      configHash: run.configHash,
    });
    (json ? console.error : console.log)(`${created ? 'started' : 'attached to'} run ${runId}`);
    if (!flags.wait) {
      if (json) await printOut(JSON.stringify(await runSummary(s.db.db, runId)));
      return 0;
    }
    const status = await waitForRun(s, runId, config, json);
    const summary = await runSummary(s.db.db, runId);
    if (!json || process.stderr.isTTY) printEvalComparison(summary, json ? console.error : console.log);
    if (json) await printOut(JSON.stringify(summary));
    return status === 'completed' ? 0 : status === 'blocked' ? 2 : 1;
  } finally {
    await s.close();
  }
}
