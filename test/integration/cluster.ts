/**
 * Workers on simulated separate machines (hosts.ts): each `operaflow worker` runs in its own network
 * namespace and UTS namespace (its own hostname, so stage_attempts.worker names the machine), with its
 * own cache, state, temp and home-cache directories, and reaches PostgreSQL, Temporal and S3 only over
 * its veth address. Nothing of a run passes between the workers except through those services: the
 * artifact store must be an object store. Used by test/integration/multihost.test.ts and
 * `npm run scale-test` (test/scale/run.ts); no jest APIs here.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, workerReady, type WorkerProcess } from './helpers';
import { createHost, hostEnv, type Host } from './hosts';

export interface ClusterWorker extends WorkerProcess {
  host: Host;
  /** The hostname the worker sees (and records with every stage attempt). */
  hostname: string;
  /** Its artifact cache (OPERAFLOW_CACHE_DIR), on its "own disk". */
  cacheDir: string;
}

export interface Cluster {
  workers: ClusterWorker[];
  destroy(): Promise<void>;
}

/** A port on this machine's loopback, from a URL or host:port (what the forwarders carry). */
export function loopbackPort(address: string): number {
  const url = new URL(address.includes('://') ? address : `tcp://${address}`);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname))
    throw new Error(`${address} is not on this machine's loopback: a simulated host reaches only forwarded ports`);
  return Number(url.port);
}

/**
 * Starts one worker per entry, each on its own simulated host, polling `queues` (e.g. `rollout` on one
 * machine, `train` on another) under `queuePrefix`. Resolves once every worker polls.
 */
export async function startCluster(opts: {
  hosts: { name: string; queues: string }[];
  queuePrefix: string;
  databaseUrl: string;
  temporalAddress: string;
  s3Endpoint: string;
  /** Index of the first host's subnet (hosts.ts), so concurrent clusters do not collide. */
  firstIndex?: number;
  timeoutMs?: number;
}): Promise<Cluster> {
  const base = mkdtempSync(join(tmpdir(), 'operaflow-cluster-'));
  const ports = [opts.databaseUrl, opts.temporalAddress, opts.s3Endpoint].map((a) => ({ port: loopbackPort(a) }));
  const workers: ClusterWorker[] = [];
  const destroy = async () => {
    await Promise.all(workers.map((w) => w.host.destroy()));
    rmSync(base, { recursive: true, force: true });
  };
  try {
    for (const [k, spec] of opts.hosts.entries()) {
      const host = await createHost(spec.name, (opts.firstIndex ?? 40) + k, ports);
      const disk = (sub: string) => {
        const dir = join(base, spec.name, sub);
        mkdirSync(dir, { recursive: true });
        return dir;
      };
      const hostname = `opf-${spec.name}`;
      const cacheDir = disk('artifact-cache');
      const env = hostEnv({
        FORCE_COLOR: '0',
        DATABASE_URL: host.rewrite(opts.databaseUrl),
        TEMPORAL_ADDRESS: host.rewrite(opts.temporalAddress),
        OPERAFLOW_S3_ENDPOINT: host.rewrite(opts.s3Endpoint),
        OPERAFLOW_QUEUE_PREFIX: opts.queuePrefix,
        OPERAFLOW_CACHE_DIR: cacheDir,
        OPERAFLOW_STATE_DIR: disk('state'),
        XDG_CACHE_HOME: disk('home-cache'),
        TMPDIR: disk('tmp'),
      });
      workers.push(await spawnWorker(host, hostname, cacheDir, env, spec.queues, opts.timeoutMs ?? 120_000));
    }
    return { workers, destroy };
  } catch (err) {
    await destroy();
    throw err;
  }
}

/** `operaflow worker --queues …` on `host` under its own hostname; resolves once it polls. */
async function spawnWorker(
  host: Host,
  hostname: string,
  cacheDir: string,
  env: NodeJS.ProcessEnv,
  queues: string,
  timeoutMs: number,
): Promise<ClusterWorker> {
  const child = host.spawn(
    'unshare',
    // unshare --uts: a hostname of this process's own, set before the worker starts ($0 is the hostname).
    [
      '--uts',
      'sh',
      '-c',
      'hostname "$0" && exec "$@"',
      hostname,
      process.execPath,
      ...CLI,
      'worker',
      '--queues',
      queues,
    ],
    { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return { host, hostname, cacheDir, ...(await workerReady(child, `worker on ${hostname}`, timeoutMs)) };
}
