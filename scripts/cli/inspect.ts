/** `operaflow runs [--json]` and `operaflow show <run> [--json]`: what was recorded about runs, and what a live run is doing. */
import { listRuns, runSummary, type RunSummary } from '../../db/queries';
import type { EvalResult } from '../../activities/types';
import { progressQuery } from '../../workflows/trainingRun';
import { connect, printOut, workflowRunning } from './connect';

export function printEvalComparison(summary: RunSummary, out: (line: string) => void): void {
  const before = summary.summary?.evalBefore as EvalResult | null | undefined;
  const after = summary.summary?.evalAfter as EvalResult | null | undefined;
  out(`run ${summary.id}: ${summary.status} after ${summary.currentIteration} iteration(s)`);
  if (!before || !after) return;
  const fmt = (v: number | null) => (v === null ? '   n/a' : v.toFixed(4).padStart(8));
  out(`evaluation on ${after.prompts} held-out prompts   before RL   after RL`);
  out(`  mean OPERA reward                 ${fmt(before.reward)}   ${fmt(after.reward)}`);
  out(`  relative likelihood (ppl score)   ${fmt(before.ppl)}   ${fmt(after.ppl)}`);
  out(`  reflection score                  ${fmt(before.reflection)}   ${fmt(after.reflection)}`);
  out(`  reference log-likelihood          ${fmt(before.refLogp)}   ${fmt(after.refLogp)}`);
  out(`  exact match (math)                ${fmt(before.exactMatch)}   ${fmt(after.exactMatch)}`);
  // `?? null`: runs recorded before the hidden checks have no such field.
  out(`  hidden-check accuracy             ${fmt(before.hiddenCheck ?? null)}   ${fmt(after.hiddenCheck ?? null)}`);
}

export async function runs(flags: { json?: boolean; group?: string }): Promise<number> {
  const s = await connect();
  try {
    const rows = await listRuns(s.db.db, 50, flags.group);
    if (flags.json) {
      await printOut(JSON.stringify(rows));
      return 0;
    }
    if (rows.length === 0)
      console.log(
        flags.group ? `no runs in group ${flags.group}` : 'no runs yet: operaflow train configs/smoke.yaml --wait',
      );
    for (const r of rows) {
      const total = (r.config as { grpo?: { iterations?: number } }).grpo?.iterations ?? '?';
      console.log(
        `${r.id.padEnd(48)} ${r.status.padEnd(10)} ${`${r.currentIteration}/${total}`.padEnd(7)} ${r.createdAt.toISOString()}${r.group ? `  ${r.group}` : ''}`,
      );
    }
    return 0;
  } finally {
    await s.close();
  }
}

export async function show(runId: string, flags: { json?: boolean }): Promise<number> {
  const s = await connect();
  try {
    const summary = await runSummary(s.db.db, runId);
    if (flags.json) {
      await printOut(JSON.stringify(summary));
      return 0;
    }
    console.log(
      `run ${summary.id} (${summary.name ?? ''})  status ${summary.status}  iteration ${summary.currentIteration}`,
    );
    console.log(
      `config ${summary.configHash.slice(0, 12)}  code ${summary.codeVersion.slice(0, 12)}  seed ${summary.seed}  created ${summary.createdAt}${summary.group ? `  group ${summary.group}` : ''}`,
    );
    if (summary.error) console.log(`error: ${summary.error}`);
    console.log('stages:');
    for (const st of summary.stages) {
      const attempts = st.attempts
        .map(
          (a) =>
            `#${a.attempt} ${a.status}${a.durationMs !== null ? ` ${(a.durationMs / 1000).toFixed(1)}s` : ''}${a.worker ? ` @${a.worker}` : ''}${a.providers ? ` on ${a.providers}` : ''}${a.error ? ` (${a.error.slice(0, 120)})` : ''}`,
        )
        .join('; ');
      console.log(
        `  ${`${st.stage} it${st.iteration}${st.stage === 'rollout' || st.stage === 'score' ? ` s${st.shard}` : ''}`.padEnd(22)} ${st.status.padEnd(10)} ${attempts}`,
      );
    }
    console.log('latest metrics:');
    for (const [name, m] of Object.entries(summary.metrics))
      console.log(`  ${name.padEnd(28)} ${m.value.toFixed(5).padStart(12)}  (step ${m.step})`);
    console.log(
      `rows: ${summary.counts.samples} samples, ${summary.counts.metrics} metrics, ${summary.counts.artifacts} artifacts, ${summary.counts.stageAttempts} stage attempts`,
    );
    if (await workflowRunning(s, runId)) {
      // The workflow's own view (answered by a worker; skipped if none answers within a few seconds).
      const progress = await Promise.race([
        s.client.workflow
          .getHandle(runId)
          .query(progressQuery)
          .catch(() => undefined),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000).unref()),
      ]);
      if (progress) {
        const blocked = progress.blocked.map((b) => `${b.stage} it${b.iteration} s${b.shard}: ${b.error}`).join('; ');
        console.log(
          `live: ${progress.status} · ${progress.stage} iteration ${progress.iteration}/${progress.iterations} · ${progress.shardsDone}/${progress.shards} shards${progress.ema !== null ? ` · ema ${progress.ema.toFixed(4)}` : ''}${blocked ? ` · blocked on ${blocked}` : ''}`,
        );
      }
    } else if (!['completed', 'failed', 'cancelled'].includes(summary.status)) {
      console.log(
        `note: the run's workflow is not running (its status ${summary.status} is what it last recorded); \`operaflow resume ${runId}\` continues it`,
      );
    }
    printEvalComparison(summary, console.log);
    return 0;
  } finally {
    await s.close();
  }
}
