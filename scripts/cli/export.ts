/** `operaflow export <run> [--iteration N] --out DIR [--merged | --adapter]`: see activities/export.ts. */
import { exportPolicy } from '../../activities/export';
import { createDb } from '../../db/client';
import { UsageError, endpoints } from './connect';

export async function exportRun(
  runId: string,
  flags: { out?: string; iteration?: string; merged?: boolean; adapter?: boolean },
): Promise<number> {
  if (!flags.out) throw new UsageError('export needs --out <dir>');
  if (flags.merged && flags.adapter) throw new UsageError('export: --merged and --adapter exclude each other');
  const iteration = flags.iteration === undefined ? undefined : Number(flags.iteration);
  if (iteration !== undefined && !(Number.isInteger(iteration) && iteration >= 0))
    throw new UsageError(`export: --iteration must be a whole number >= 0, got "${flags.iteration}"`);
  const db = createDb((await endpoints()).databaseUrl);
  try {
    const format = flags.adapter ? 'adapter' : 'merged';
    const done = await exportPolicy(db.db, runId, { out: flags.out, format, iteration });
    console.log(
      `exported run ${runId} iteration ${done.iteration} (${format}) to ${flags.out}: ${done.files.length} files`,
    );
    return 0;
  } finally {
    await db.close();
  }
}
