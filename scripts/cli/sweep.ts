/**
 * `operaflow sweep <config.yaml> [--seeds 0-4] [--set key=v1,v2 …] [--parallel N] [--group <name>] [--wait] [--json]`:
 * the cross product of the --set values and the seeds as runs of one group, run by the durable workflow
 * `sweepRun` (workflows/sweep.ts) at most N at a time. Every run is checked like `train` checks one
 * (schema, then preflight) and recorded (status pending) before the sweep starts; if the sweep cannot
 * start, the rows are removed again: a sweep is recorded and started whole, or not at all.
 */
import { appendEvent, createRun, deleteRun, runsInGroup } from '../../db/queries';
import type { Run } from '../../db/schema';
import { groupProblem, runIdProblem } from '../../config/run-id';
import { configHash, loadRunConfig } from '../../config/load';
import { sweepRun, sweepWorkflowId, type SweepInput } from '../../workflows/sweep';
import { UsageError, actor, codeVersion, connect, printOut, type Services } from './connect';
import { planOf, taskQueues } from './plan';
import {
  overrideLabel,
  parseParallel,
  parseSeeds,
  parseSets,
  planSweep,
  type Overrides,
  type PlannedRun,
} from './sweep-spec';
import { checkPreflight, newRunId, newRunRow, resolvePaths, runSlug } from './train';

export interface SweepFlags {
  seeds?: string;
  set?: string[];
  parallel?: string;
  group?: string;
  wait?: boolean;
  json?: boolean;
}

export interface SweepRunInfo {
  id: string;
  name: string;
  seed: number;
  overrides: Overrides;
}

/**
 * Run ids: the group, the variant's values as a slug, the seed (`smoke-…-grpo-lr-0-001-s0`). When two
 * variants slug alike (`a.b` and `a-b`), variants are numbered instead.
 */
function runIds(group: string, planned: readonly PlannedRun[]): string[] {
  const labels = planned.map((p) => overrideLabel(p.overrides));
  const slugs = new Map<number, string>();
  for (const [i, p] of planned.entries()) slugs.set(p.variant, labels[i] ? runSlug(labels[i]) : '');
  const distinct = new Set(slugs.values()).size === slugs.size;
  return planned.map((p) => {
    const variant = distinct ? slugs.get(p.variant)! : `v${p.variant + 1}`;
    const id = [group, variant, `s${p.seed}`].filter(Boolean).join('-');
    const problem = runIdProblem(id);
    if (problem) throw new UsageError(`--group ${JSON.stringify(group.slice(0, 60))}: its run id "${id}" ${problem}`);
    return id;
  });
}

/** Follows the sweep until its workflow closes: a line whenever the runs' statuses change. */
export async function waitForSweep(s: Services, group: string, out: (line: string) => void): Promise<Run[]> {
  const handle = s.client.workflow.getHandle<typeof sweepRun>(sweepWorkflowId(group));
  let closed = false;
  const result = handle.result().then(
    () => (closed = true),
    (err: Error) => {
      closed = true;
      out(`sweep ${sweepWorkflowId(group)} failed: ${err.message}`);
    },
  );
  let last = '';
  const blockedShown = new Set<string>();
  for (;;) {
    const rows = await runsInGroup(s.db.db, group);
    const counts = new Map<string, number>();
    for (const r of rows) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
    const line = `[sweep ${group}] ${[...counts].map(([status, n]) => `${n} ${status}`).join(', ')}`;
    if (line !== last) out((last = line));
    for (const r of rows.filter((r) => r.status === 'blocked' && !blockedShown.has(r.id))) {
      blockedShown.add(r.id);
      out(
        `run ${r.id} is blocked: ${r.error ?? ''}\n  the sweep waits for it: operaflow retry ${r.id} (or cancel ${r.id})`,
      );
    }
    if (closed) return rows;
    await Promise.race([result, new Promise((r) => setTimeout(r, 2000))]);
  }
}

/**
 * Records the planned runs as group `group` (pending) and starts their sweep workflow; if it cannot start,
 * removes the rows again. Returns the runs as recorded. Shared by `operaflow sweep` and `npm run experiment`.
 */
export async function startSweep(
  s: Services,
  options: { file: string; planned: PlannedRun[]; group: string; parallel: number },
): Promise<SweepRunInfo[]> {
  const { file, planned, group, parallel } = options;
  const ids = runIds(group, planned);
  const workflowId = sweepWorkflowId(group);
  const existing = await runsInGroup(s.db.db, group);
  if (existing.length)
    throw new Error(
      `--group ${group}: the group already has ${existing.length} run(s); a sweep starts a group of its own (compare across groups with operaflow compare <run…>)`,
    );
  for (const p of planned) await checkPreflight(p.config, file, `${p.config.name}: `);

  const code = codeVersion();
  const recorded: string[] = [];
  const input: SweepInput = {
    group,
    parallel,
    runs: planned.map((p, i) => ({ runId: ids[i]!, plan: planOf(p.config) })),
  };
  try {
    for (const [i, p] of planned.entries()) {
      const { created } = await createRun(s.db.db, newRunRow(ids[i]!, p.config, group, code));
      if (!created) throw new Error(`run ${ids[i]} exists already`);
      recorded.push(ids[i]!);
    }
    await s.client.workflow.start(sweepRun, {
      taskQueue: taskQueues().train,
      workflowId,
      args: [input],
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
    });
  } catch (err) {
    // Recorded and started together, or neither: rows without their sweep would stay pending forever.
    for (const id of recorded) await deleteRun(s.db.db, id);
    throw new Error(`could not start sweep ${workflowId} (nothing was recorded): ${(err as Error).message}`, {
      cause: err,
    });
  }
  const who = actor();
  for (const [i, p] of planned.entries())
    await appendEvent(s.db.db, ids[i]!, 'started', who, {
      config: file,
      configHash: configHash(p.config),
      sweep: workflowId,
    });
  return planned.map((p, i) => ({ id: ids[i]!, name: p.config.name, seed: p.seed, overrides: p.overrides }));
}

export async function sweep(file: string, flags: SweepFlags): Promise<number> {
  if (flags.group !== undefined) {
    const problem = groupProblem(flags.group);
    if (problem) throw new UsageError(`--group ${JSON.stringify(flags.group.slice(0, 60))}: a group ${problem}`);
  }
  const parallel = parseParallel(flags.parallel);
  const axes = parseSets(flags.set ?? []);
  const base = loadRunConfig(file);
  const seeds = parseSeeds(flags.seeds, base.seed);
  const planned = planSweep(base, axes, seeds).map((p) => ({ ...p, config: resolvePaths(p.config) }));
  const group = flags.group ?? newRunId(base.name);
  const json = Boolean(flags.json);
  const out = json ? console.error : console.log;
  const workflowId = sweepWorkflowId(group);

  const s = await connect();
  try {
    const runs = await startSweep(s, { file, planned, group, parallel });
    const variants = new Set(planned.map((p) => p.variant)).size;
    out(
      `started sweep ${workflowId}: ${runs.length} run(s) (${variants} variant(s) × ${seeds.length} seed(s)), at most ${Math.min(parallel, runs.length)} at a time`,
    );
    for (const r of runs) out(`  ${r.id}  ${r.name}`);
    let statuses = new Map(runs.map((r) => [r.id, 'pending']));
    if (flags.wait) {
      const rows = await waitForSweep(s, group, out);
      statuses = new Map(rows.map((r) => [r.id, r.status]));
      for (const r of rows)
        if (r.status !== 'completed') out(`run ${r.id} ended ${r.status}${r.error ? `: ${r.error}` : ''}`);
    } else {
      out(`follow: operaflow runs --group ${group}   compare: operaflow compare --group ${group}`);
    }
    if (json)
      await printOut(
        JSON.stringify({ group, workflowId, parallel, runs: runs.map((r) => ({ ...r, status: statuses.get(r.id) })) }),
      );
    if (!flags.wait) return 0;
    return [...statuses.values()].every((st) => st === 'completed') ? 0 : 1;
  } finally {
    await s.close();
  }
}
