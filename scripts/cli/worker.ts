/** `operaflow worker [--queues rollout,train]`: one worker process polling the task queues (workers on other machines join the same way). */
import { hostname } from 'node:os';
import { Client, Connection } from '@temporalio/client';
import { releaseDeadWorkers } from '../../activities/reaper';
import { workerProviders } from '../../activities/runtime';
import { createDb, type Db } from '../../db/client';
import { TASK_QUEUES } from '../../workflows/trainingRun';
import { UsageError, endpoints } from './connect';
import { taskQueues } from './plan';
import { workflowBundle } from './workflow-bundle';

/** The Temporal workers of one process: one per task queue, sharing a connection. */
export async function createWorkers(opts: {
  queues: string[];
  db: Db;
  identity: string;
  temporalAddress: string;
  log: (line: string) => void;
}) {
  const names = taskQueues();
  // Loaded here, not at the top: the engine (onnxruntime) and the worker SDK are heavy, other commands need neither.
  const { DefaultLogger, NativeConnection, Runtime, Worker } = await import('@temporalio/worker');
  // The SDK logs every bundling detail at INFO; operators need warnings and our own stage lines.
  Runtime.install({ logger: new DefaultLogger((process.env.OPERAFLOW_LOG_LEVEL as 'INFO' | undefined) ?? 'WARN') });
  const { createActivities } = require('../../activities') as typeof import('../../activities');
  const connection = await NativeConnection.connect({ address: opts.temporalAddress });
  const activities = createActivities({ db: opts.db, worker: opts.identity, log: opts.log });
  try {
    const bundle = opts.queues.includes(TASK_QUEUES.train) ? await workflowBundle(opts.log) : undefined;
    const workers = await Promise.all(
      opts.queues.map((queue) =>
        Worker.create({
          connection,
          taskQueue: names[queue as keyof typeof names],
          identity: opts.identity,
          activities,
          // Compute activities hold the CPU (ORT blocks the event loop): one rollout shard at a time; the
          // train queue also serves the quick status writes, so it takes a few.
          maxConcurrentActivityTaskExecutions: queue === TASK_QUEUES.train ? 4 : 1,
          // Heartbeats reach the server every 2 s at most (not 0.8 × the timeout): `train --wait` shows them as progress.
          maxHeartbeatThrottleInterval: '2 seconds',
          // On SIGTERM/SIGINT running activities are cancelled at once (grace 0): they record their attempt as
          // lost and move to another worker instead of waiting out a heartbeat timeout there.
          shutdownGraceTime: 0,
          shutdownForceTime: '20 seconds',
          ...(queue === TASK_QUEUES.train ? { workflowBundle: bundle } : {}),
        }),
      ),
    );
    return { workers, connection };
  } catch (err) {
    await connection.close();
    throw err;
  }
}

/**
 * OPERAFLOW_PROVIDERS is checked before the worker polls: a GPU worker without a working GPU fails here,
 * with the reason, instead of failing every stage it takes.
 */
async function checkWorkerProviders(): Promise<void> {
  const providers = workerProviders();
  if (!providers?.some((p) => p !== 'cpu')) return;
  const { PROBE_TOLERANCE, probeProviders } = require('./gpu') as typeof import('./gpu'); // loads ONNX Runtime: only for GPU workers
  const what = `OPERAFLOW_PROVIDERS=${providers.join(',')}`;
  let diff: number;
  try {
    diff = await probeProviders(providers);
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}`);
  }
  if (diff > PROBE_TOLERANCE)
    throw new Error(
      `${what}: a test graph differs from the CPU provider by ${diff.toExponential(2)} (over ${PROBE_TOLERANCE})`,
    );
  console.error(`${what}: ok (a test graph matches the CPU provider within ${diff.toExponential(1)})`);
}

export async function worker(flags: { queues?: string }): Promise<number> {
  const queues = (flags.queues ?? 'rollout,train')
    .split(',')
    .map((q) => q.trim())
    .filter(Boolean);
  const known = Object.values(TASK_QUEUES) as string[];
  for (const q of queues)
    if (!known.includes(q)) throw new UsageError(`--queues: unknown queue "${q}" (known: ${known.join(', ')})`);
  const names = taskQueues();
  await checkWorkerProviders();
  const { databaseUrl, temporalAddress } = await endpoints();
  const db = createDb(databaseUrl);
  const identity = `${hostname()}:${process.pid}`;
  const log = (line: string) => console.error(`[${new Date().toISOString()}] ${line}`);
  const closers: (() => Promise<void>)[] = [];
  let connection: { close(): Promise<void> } | undefined;
  try {
    const created = await createWorkers({ queues, db: db.db, identity, temporalAddress, log });
    connection = created.connection;
    const workers = created.workers;
    // Every second: release the attempts of dead workers on this machine (activities/reaper.ts).
    const client = new Client({ connection: await Connection.connect({ address: temporalAddress }) });
    let reaping = false;
    const reaper = setInterval(() => {
      if (reaping) return;
      reaping = true;
      releaseDeadWorkers(db.db, client, { host: hostname(), identity, log })
        .catch(() => undefined) // the database or server is down: the next round tries again
        .finally(() => (reaping = false));
    }, 1000);
    reaper.unref();
    closers.push(async () => {
      clearInterval(reaper);
      await client.connection.close();
    });
    console.log(
      `operaflow worker ${identity} polling ${queues.map((q) => names[q as keyof typeof names]).join(',')} at ${temporalAddress}`,
    );
    // SIGINT/SIGTERM shut the workers down gracefully (the SDK's Runtime installs those handlers).
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    for (const close of closers) await close();
    await connection?.close();
    await db.close();
  }
  return 0;
}
