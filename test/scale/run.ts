/**
 * `npm run scale-test [-- --hosts 3 --config configs/demo.yaml --no-kill]`: the run of a config on N
 * simulated machines (test/integration/cluster.ts: each worker in its own network and UTS namespace with
 * its own disk, reaching PostgreSQL, Temporal and S3 over its veth only) against the same config on one
 * worker with a local store.
 *
 * Every host polls both queues; unless --no-kill, one host is lost (its worker SIGKILLed, the machine
 * not replaced) once the first update has completed, and the others finish the run. It asserts: the run
 * completes; its samples, metrics and checkpoint hashes equal the one-worker run's; every stage attempt
 * names the host that ran it, and more than one host ran stages. It prints one JSON line: wall times,
 * attempts and cached bytes per host. Exit 0 when all hold. Needs root (network namespaces); not part
 * of `npm test` (the quick two-host version is test/integration/multihost.test.ts).
 */
import { readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { stringify } from 'yaml';
import { ensureBucket } from '../../activities/store-s3';
import { loadRunConfig } from '../../config/load';
import { ensureServices, useServices } from '../../services';
import { startCluster, type Cluster } from '../integration/cluster';
import { runCli, runIdOf, startWorker, testEnv, tmpDir, removeTmpDirs, writeConfig } from '../integration/helpers';
import { destroyAllHosts, netnsAvailable } from '../integration/hosts';
import { expectSameRecord, runRecord } from '../integration/records';

const { values: args } = parseArgs({
  options: {
    hosts: { type: 'string', default: '3' },
    config: { type: 'string', default: 'configs/demo.yaml' },
    'no-kill': { type: 'boolean', default: false },
  },
  strict: true,
});

const BUCKET = 'operaflow-scale';

function bytesUnder(dir: string): number {
  let total = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries)
    total += e.isDirectory() ? bytesUnder(join(dir, e.name)) : e.isFile() ? statSync(join(dir, e.name)).size : 0;
  return total;
}

async function main(): Promise<number> {
  const hosts = Number(args.hosts);
  if (!Number.isInteger(hosts) || hosts < 2 || hosts > 16) throw new Error(`--hosts must be 2..16, got ${args.hosts}`);
  const availability = netnsAvailable();
  if (!availability.ok) throw new Error(`network namespaces are not available here: ${availability.reason}`);
  const log = (line: string) => console.error(`[scale-test] ${line}`);
  const services = await ensureServices({ s3: true, database: 'operaflow_scale', log });
  useServices(services);
  await ensureBucket(BUCKET);
  const raw = loadRunConfig(resolve(args.config));
  const configFor = (artifacts: string) =>
    writeConfig(stringify({ ...raw, name: 'scale-test', runtime: { ...raw.runtime, artifacts } }));
  const db = new pg.Pool({ connectionString: services.databaseUrl, max: 2 });
  let cluster: Cluster | undefined;
  try {
    const clusterEnv = testEnv(`scale-${process.pid}-`);
    log(`starting ${hosts} hosts`);
    cluster = await startCluster({
      hosts: Array.from({ length: hosts }, (_, k) => ({ name: `h${k}`, queues: 'rollout,train' })),
      queuePrefix: clusterEnv.OPERAFLOW_QUEUE_PREFIX!,
      databaseUrl: services.databaseUrl,
      temporalAddress: services.temporalAddress,
      s3Endpoint: process.env.OPERAFLOW_S3_ENDPOINT!,
    });
    const t0 = Date.now();
    const runId = `scale-test-${process.pid}`;
    const finished = runCli(
      ['train', configFor(`s3://${BUCKET}/runs`), '--id', runId, '--wait', '--json'],
      clusterEnv,
      3_600_000,
    );
    log(`run ${runId} on ${hosts} hosts`);
    let ended = false;
    void finished.finally(() => (ended = true));
    let lost: string | undefined;
    if (!args['no-kill']) {
      // Lose a machine once the first update is done: the one that ran it.
      while (!ended) {
        const { rows } = await db.query<{ worker: string }>(
          "select worker from stage_attempts where run_id = $1 and stage = 'update' and status = 'completed' limit 1",
          [runId],
        );
        if (rows[0]) {
          const victim =
            cluster.workers.find((w) => rows[0]!.worker.startsWith(`${w.hostname}:`)) ?? cluster.workers[0]!;
          await victim.kill();
          lost = victim.hostname;
          log(`lost host ${lost} (worker SIGKILLed after the first update)`);
          break;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    const done = await finished;
    if (done.code !== 0) throw new Error(`run ${runId} did not complete: ${done.stderr}`);
    const clusterSeconds = (Date.now() - t0) / 1000;

    log('the same config on one worker with a local store');
    const refEnv = testEnv(`scale-ref-${process.pid}-`);
    const worker = await startWorker(refEnv);
    const t1 = Date.now();
    const ref = await runCli(['train', configFor(tmpDir()), '--wait', '--json'], refEnv, 3_600_000);
    await worker.stop();
    if (ref.code !== 0) throw new Error(`reference run failed: ${ref.stderr}`);
    const oneWorkerSeconds = (Date.now() - t1) / 1000;
    const refId = runIdOf(ref.stdout);

    expectSameRecord(`${hosts} hosts + S3 vs one worker`, await runRecord(db, runId), await runRecord(db, refId));
    const { rows: attempts } = await db.query<{ worker: string; status: string }>(
      'select worker, status from stage_attempts where run_id = $1',
      [runId],
    );
    const perHost: Record<string, { attempts: number; cachedBytes: number }> = {};
    for (const w of cluster.workers) perHost[w.hostname] = { attempts: 0, cachedBytes: bytesUnder(w.cacheDir) };
    for (const a of attempts) {
      const host = a.worker.split(':')[0]!;
      if (!perHost[host]) throw new Error(`attempt recorded by ${a.worker}, not one of the hosts`);
      perHost[host].attempts++;
    }
    const busy = Object.values(perHost).filter((h) => h.attempts > 0).length;
    if (busy < 2) throw new Error(`only ${busy} host ran stages: ${JSON.stringify(perHost)}`);
    console.log(
      JSON.stringify({
        ok: true,
        runId,
        referenceRunId: refId,
        hosts,
        lostHost: lost ?? null,
        identicalToOneWorker: true,
        clusterSeconds,
        oneWorkerSeconds,
        attempts: attempts.length,
        notCompletedAttempts: attempts.filter((a) => a.status !== 'completed').length,
        perHost,
      }),
    );
    return 0;
  } finally {
    await cluster?.destroy();
    await destroyAllHosts();
    await db.end();
    removeTmpDirs();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`[scale-test] FAILED: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
