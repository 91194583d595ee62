/**
 * What a run recorded, read back for comparison: every sample (responses, reward components,
 * advantages, checkpoint log-probs), every metric, and the sha256 of every checkpoint file. Two runs
 * whose only difference is scheduling (shards, workers, continue-as-new, pauses, a cancel + resume) must
 * record the same values bit for bit: randomness is keyed by (seed, iteration, prompt, sample, token)
 * and every stage restarts from recorded inputs.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';

export interface RunRecord {
  samples: unknown[][];
  metrics: unknown[][];
  checkpoints: unknown[][];
  /** sha256 of the last iteration's model.safetensors. */
  finalCheckpoint: string | undefined;
}

export async function runRecord(db: pg.Pool, runId: string): Promise<RunRecord> {
  const samples = await db.query({
    text: `select split, iteration, prompt_id, sample_index, response, response_tokens, reward, ppl, reflection,
                  reflection_count, correct, advantage, logp_full, logp_initial, logp_segments
             from samples where run_id = $1 order by split, iteration, prompt_id, sample_index`,
    values: [runId],
    rowMode: 'array',
  });
  const metrics = await db.query({
    text: 'select step, name, value from metrics where run_id = $1 order by step, name',
    values: [runId],
    rowMode: 'array',
  });
  const checkpoints = await db.query({
    text: `select kind, iteration, name, sha256, bytes from artifacts
            where run_id = $1 and kind in ('checkpoint', 'optimizer') order by iteration, kind, name`,
    values: [runId],
    rowMode: 'array',
  });
  const models = (checkpoints.rows as unknown[][]).filter((r) => r[2] === 'model.safetensors');
  return {
    samples: samples.rows as unknown[][],
    metrics: metrics.rows as unknown[][],
    checkpoints: checkpoints.rows as unknown[][],
    finalCheckpoint: models.length ? String(models.at(-1)?.[3]) : undefined,
  };
}

const digest = (rows: unknown[][]): string => createHash('sha256').update(JSON.stringify(rows)).digest('hex');

export interface RunDigest {
  samples: string;
  metrics: string;
  checkpoints: string;
  finalCheckpoint: string | undefined;
  counts: { samples: number; metrics: number; checkpoints: number };
}

export const runDigest = (r: RunRecord): RunDigest => ({
  samples: digest(r.samples),
  metrics: digest(r.metrics),
  checkpoints: digest(r.checkpoints),
  finalCheckpoint: r.finalCheckpoint,
  counts: { samples: r.samples.length, metrics: r.metrics.length, checkpoints: r.checkpoints.length },
});

/**
 * Throws unless the two records are identical, naming the first row that differs (a digest mismatch
 * alone would not say where to look).
 */
export function expectSameRecord(label: string, got: RunRecord, want: RunRecord): void {
  const a = runDigest(got);
  const b = runDigest(want);
  if (JSON.stringify(a) === JSON.stringify(b)) return;
  const problems: string[] = [];
  for (const part of ['samples', 'metrics', 'checkpoints'] as const) {
    if (a[part] === b[part]) continue;
    const n = Math.max(got[part].length, want[part].length);
    for (let i = 0; i < n; i++) {
      if (JSON.stringify(got[part][i]) !== JSON.stringify(want[part][i])) {
        problems.push(
          `${part} row ${i}: got ${JSON.stringify(got[part][i])}, want ${JSON.stringify(want[part][i])} (${got[part].length} vs ${want[part].length} rows)`,
        );
        break;
      }
    }
  }
  throw new Error(
    `${label}: the run's record differs from the reference run's\n  ${problems.join('\n  ')}\n  digests: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`,
  );
}
