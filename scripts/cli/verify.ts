/** `operaflow verify <run> [--repair] [--json]`: is everything the run's completed stages produced recorded and intact? */
import { verifyRun } from '../../activities/verify';
import { createDb } from '../../db/client';
import { endpoints, printOut } from './connect';

/** Exit 0 when nothing is (any longer) missing, 1 otherwise. */
export async function verify(runId: string, flags: { repair?: boolean; json?: boolean }): Promise<number> {
  const db = createDb((await endpoints()).databaseUrl);
  try {
    const report = await verifyRun(db.db, runId, { repair: flags.repair === true });
    const open = report.problems.filter((p) => !p.repaired);
    if (flags.json) {
      await printOut(JSON.stringify(report));
      return open.length ? 1 : 0;
    }
    const c = report.checked;
    console.log(
      `run ${runId} (${report.status}): ${c.stages} completed stages, ${c.artifacts} artifacts, ${c.metrics} metrics, ${c.samples} samples checked`,
    );
    for (const p of report.problems) {
      const state = p.repaired ? 'repaired' : p.repairable ? 'repairable with --repair' : 'cannot be re-derived';
      console.log(`  ${p.where}: ${p.problem} (${state})`);
    }
    console.log(
      open.length === 0
        ? report.problems.length
          ? `ok after repairing ${report.problems.length} problem(s)`
          : 'ok: nothing missing, every file matches its sha256'
        : `${open.length} problem(s)${open.some((p) => p.repairable) ? '; `operaflow verify --repair` re-derives those marked repairable' : ''}`,
    );
    return open.length ? 1 : 0;
  } finally {
    await db.close();
  }
}
