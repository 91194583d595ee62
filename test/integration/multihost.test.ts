/**
 * Past one machine: a run whose artifacts live in S3 (the moto server the test setup started) is served
 * by two workers on simulated separate hosts (cluster.ts: own network namespace, own hostname, own
 * disk; PostgreSQL, Temporal and S3 reached over the veth only). One polls `rollout`, the other `train`,
 * so every iteration's checkpoint crosses from one machine to the other and every rollout and score
 * file back, through the bucket. The run must record exactly what a one-worker run with a local store
 * records, and every stage attempt must name the host that ran it.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteObjectCommand } from '@aws-sdk/client-s3';
import { s3Client } from '../../activities/store-s3';
import { startCluster, type Cluster } from './cluster';
import { integrationFile, runCli, runIdOf, smokeYaml, testEnv, tmpDir, writeConfig } from './helpers';
import { destroyAllHosts, netnsAvailable } from './hosts';
import { expectSameRecord, runRecord } from './records';

jest.setTimeout(600_000);

const file = integrationFile('multihost-ref');
const clusterEnv = testEnv(`multihost-${process.pid}-`);
const bucket = `multihost-${process.pid}`;
const availability = netnsAvailable();
let cluster: Cluster | undefined;

afterAll(async () => {
  await cluster?.destroy();
  await destroyAllHosts();
});

/** Files under `dir`, relative, recursively. */
function filesUnder(dir: string, prefix = ''): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`],
  );
}

async function trainToEnd(env: NodeJS.ProcessEnv, artifacts: string, name: string): Promise<string> {
  const config = writeConfig(smokeYaml({ name, artifacts }));
  const res = await runCli(['train', config, '--wait', '--json'], env, 400_000);
  const runId = runIdOf(res.stdout);
  file.started.push(runId);
  if (res.code !== 0)
    throw new Error(
      `train exited ${res.code}\n${res.stderr}\n${cluster?.workers.map((w) => `--- ${w.hostname}\n${w.output()}`).join('\n')}`,
    );
  return runId;
}

(availability.ok ? test : test.skip)(
  `a run on two hosts sharing only PostgreSQL, Temporal and an S3 bucket records what a one-worker run does${availability.ok ? '' : ` (skipped: ${availability.reason})`}`,
  async () => {
    await s3Client().send(new CreateBucketCommand({ Bucket: bucket }));
    cluster = await startCluster({
      hosts: [
        { name: 'roll', queues: 'rollout' },
        { name: 'train', queues: 'train' },
      ],
      queuePrefix: clusterEnv.OPERAFLOW_QUEUE_PREFIX!,
      databaseUrl: process.env.DATABASE_URL!,
      temporalAddress: process.env.TEMPORAL_ADDRESS!,
      s3Endpoint: process.env.OPERAFLOW_S3_ENDPOINT!,
    });
    await file.worker();
    // Both at once: the reference (one worker, local store) and the two-host run (S3).
    const [crossHost, reference] = await Promise.all([
      trainToEnd(clusterEnv, `s3://${bucket}/runs`, 'multihost'),
      trainToEnd(file.env, tmpDir(), 'multihost'),
    ]);

    expectSameRecord(
      'two hosts + S3 vs one worker + local store',
      await runRecord(file.db, crossHost),
      await runRecord(file.db, reference),
    );

    // Every attempt names its host; rollouts and scores ran on one machine, the rest on the other.
    const { rows: attempts } = await file.db.query<{ stage: string; worker: string; status: string }>(
      'select stage, worker, status from stage_attempts where run_id = $1',
      [crossHost],
    );
    const hostOf = (worker: string) => worker.split(':')[0];
    for (const a of attempts) {
      const expected = a.stage === 'rollout' || a.stage === 'score' ? 'opf-roll' : 'opf-train';
      expect(`${a.stage} on ${hostOf(a.worker)}`).toBe(`${a.stage} on ${expected}`);
      expect(a.status).toBe('completed');
    }
    expect(new Set(attempts.map((a) => a.stage))).toEqual(
      new Set(['prepareDataset', 'coldStartSft', 'rollout', 'score', 'reward', 'update', 'evaluate']),
    );

    // Every recorded artifact is in the bucket, and the machines fetched what the other one wrote: the
    // rollout host the checkpoints (and the dataset), the train host the scores.
    const { rows: artifacts } = await file.db.query<{ uri: string; kind: string }>(
      'select uri, kind from artifacts where run_id = $1',
      [crossHost],
    );
    expect(artifacts.length).toBeGreaterThan(10);
    for (const a of artifacts) expect(a.uri.startsWith(`s3://${bucket}/runs/${crossHost}/`)).toBe(true);
    const [roll = [], train = []] = cluster.workers.map((w) =>
      filesUnder(join(w.cacheDir, 's3', bucket, 'runs', crossHost)),
    );
    expect(roll).toEqual(
      expect.arrayContaining([
        'dataset.json',
        'checkpoints/iter-0000/model.safetensors',
        'checkpoints/iter-0001/model.safetensors',
      ]),
    );
    // The reward stage reads the scores (which carry the rollouts), so the train host needs no rollout file.
    expect(train).toEqual(expect.arrayContaining(['scores/iter-0001/shard-0.json', 'scores/iter-0002/shard-1.json']));
    expect(train.some((f) => f.startsWith('rollouts/'))).toBe(false);
    // The rollout host never trains, so it holds no optimizer state: only what it was sent or wrote.
    expect(roll.some((f) => f.endsWith('optimizer.safetensors'))).toBe(false);

    // `operaflow verify` reads the bucket itself: intact at first; an object deleted from it is named.
    const intact = await runCli(['verify', crossHost, '--json'], clusterEnv);
    expect(intact.code).toBe(0);
    const key = `runs/${crossHost}/checkpoints/iter-0002/optimizer.safetensors`;
    await s3Client().send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    const broken = await runCli(['verify', crossHost, '--json'], clusterEnv);
    expect(broken.code).toBe(1);
    const report = JSON.parse(broken.stdout.trim().split('\n').pop()!) as { problems: { problem: string }[] };
    expect(report.problems.map((p) => p.problem)).toEqual([
      expect.stringMatching(new RegExp(`s3://${bucket}/${key}.*no such object in the store`)),
    ]);
  },
);
