/**
 * The orchestration figures of `npm run bench`: what the durable machinery costs on a real run. The
 * demo config (`--quick`: the smoke config) runs end to end through Temporal, PostgreSQL and a worker in
 * this process (so util/phase.ts can see inside it), once with a local artifact store and once with S3
 * (a local moto server unless OPERAFLOW_S3_ENDPOINT names one), interleaved, `repeats` times each:
 *   orchestrationOverheadFraction = (run wall time − time inside compute calls) / run wall time
 * with the local store, where compute calls are the engine's sampling, scoring, log-prob and training
 * steps; and the seconds each GRPO iteration spends on storage (writing, uploading, downloading and
 * hashing artifacts: the run's total divided by its iterations) with each store. One worker never
 * downloads what it wrote (its cache holds it), so the S3 figure is uploads plus hashing; downloads
 * happen when several workers share a run (`npm run scale-test`).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { loadRunConfig } from '../config/load';
import { createRun, listStageAttempts, requireRun } from '../db/queries';
import { ensureServices, useServices } from '../services';
import { phaseSeconds, resetPhases } from '../util/phase';
import { median } from '../util/stats';
import { ensureBucket } from '../activities/store-s3';
import { connect } from './cli/connect';
import { planOf } from './cli/plan';
import { checkPreflight, newRunId, newRunRow, resolvePaths, startWorkflow } from './cli/train';
import { createWorkers } from './cli/worker';

const BUCKET = 'operaflow-bench';

export interface OrchestrationFigures {
  orchestrationConfig: string;
  orchestrationOverheadFraction: number;
  orchestrationRunSeconds: number;
  orchestrationComputeSeconds: number;
  orchestrationStorageSeconds: number;
  orchestrationBetweenStagesSeconds: number;
  storageSecondsPerIterationLocal: number;
  storageSecondsPerIterationS3: number;
  orchestrationOverheadFractionS3: number;
}

interface RunTiming {
  wall: number;
  compute: number;
  storage: number;
  /** Wall time during which no stage attempt was running: Temporal's hops between stages, the workflow's own steps. */
  betweenStages: number;
  iterations: number;
}

/** Seconds of `wall` not covered by any attempt's [started, finished] interval. */
function uncovered(wall: number, attempts: { startedAt: Date; finishedAt: Date | null }[]): number {
  const spans = attempts
    .filter((a) => a.finishedAt)
    .map((a) => [a.startedAt.getTime(), a.finishedAt!.getTime()] as const)
    .sort((x, y) => x[0] - y[0]);
  let covered = 0;
  let end = -Infinity;
  for (const [from, to] of spans) {
    if (to <= end) continue;
    covered += to - Math.max(from, end);
    end = to;
  }
  return wall - covered / 1000;
}

export async function orchestrationBench(
  log: (line: string) => void,
  opts: { quick: boolean; repeats: number; providers: string[] },
): Promise<OrchestrationFigures> {
  // Its own database and task queues: the bench never mixes with a user's runs or workers.
  process.env.OPERAFLOW_QUEUE_PREFIX = `bench-${process.pid}-`;
  const services = await ensureServices({ s3: true, database: 'operaflow_bench', log });
  useServices(services);
  await ensureBucket(BUCKET);
  const scratch = mkdtempSync(join(tmpdir(), 'operaflow-bench-'));
  process.env.OPERAFLOW_CACHE_DIR = join(scratch, 'cache');
  const s = await connect();
  const { workers, connection } = await createWorkers({
    queues: ['rollout', 'train'],
    db: s.db.db,
    identity: `bench:${process.pid}`,
    temporalAddress: services.temporalAddress,
    log: () => {},
  });
  const running = Promise.all(workers.map((w) => w.run()));
  const configFile = resolve(__dirname, '..', 'configs', opts.quick ? 'smoke.yaml' : 'demo.yaml');

  async function timedRun(artifacts: string): Promise<RunTiming> {
    const raw = loadRunConfig(configFile);
    const file = join(scratch, `${newRunId('bench')}.yaml`);
    writeFileSync(
      file,
      stringify({
        ...raw,
        name: 'bench-orchestration',
        runtime: { ...raw.runtime, artifacts, providers: opts.providers },
      }),
    );
    const config = resolvePaths(loadRunConfig(file));
    await checkPreflight(config, file);
    const runId = newRunId(config.name);
    await createRun(s.db.db, newRunRow(runId, config, null));
    resetPhases();
    const t0 = performance.now();
    await startWorkflow(s, runId, { runId, plan: planOf(config) }, false);
    await s.client.workflow.getHandle(runId).result();
    const wall = (performance.now() - t0) / 1000;
    const { compute, storage } = phaseSeconds();
    const status = (await requireRun(s.db.db, runId)).status;
    if (status !== 'completed') throw new Error(`bench run ${runId} ended ${status}`);
    const betweenStages = uncovered(wall, await listStageAttempts(s.db.db, runId));
    return { wall, compute, storage, betweenStages, iterations: config.grpo.iterations };
  }

  try {
    const local: RunTiming[] = [];
    const s3: RunTiming[] = [];
    // A warm-up run builds the graphs (a worker does that once, not per run), then the stores interleaved.
    log('  orchestration: warm-up run');
    await timedRun(join(scratch, 'warmup'));
    for (let r = 0; r < opts.repeats; r++) {
      local.push(await timedRun(join(scratch, 'local')));
      s3.push(await timedRun(`s3://${BUCKET}/${process.pid}`));
      const [l, o] = [local.at(-1)!, s3.at(-1)!];
      log(
        `  orchestration run ${r + 1}/${opts.repeats}: local ${l.wall.toFixed(1)} s (compute ${l.compute.toFixed(1)}, storage ${l.storage.toFixed(2)}, between stages ${l.betweenStages.toFixed(2)}), s3 ${o.wall.toFixed(1)} s (compute ${o.compute.toFixed(1)}, storage ${o.storage.toFixed(2)}, between stages ${o.betweenStages.toFixed(2)})`,
      );
    }
    const overhead = (t: RunTiming) => (t.wall - t.compute) / t.wall;
    return {
      orchestrationConfig: opts.quick ? 'configs/smoke.yaml' : 'configs/demo.yaml',
      orchestrationOverheadFraction: median(local.map(overhead)),
      orchestrationRunSeconds: median(local.map((t) => t.wall)),
      orchestrationComputeSeconds: median(local.map((t) => t.compute)),
      orchestrationStorageSeconds: median(local.map((t) => t.storage)),
      orchestrationBetweenStagesSeconds: median(local.map((t) => t.betweenStages)),
      storageSecondsPerIterationLocal: median(local.map((t) => t.storage / t.iterations)),
      storageSecondsPerIterationS3: median(s3.map((t) => t.storage / t.iterations)),
      orchestrationOverheadFractionS3: median(s3.map(overhead)),
    };
  } finally {
    for (const w of workers) w.shutdown();
    await running.catch(() => undefined);
    await connection.close();
    await s.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
