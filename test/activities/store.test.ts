/**
 * The artifact store against a real S3-compatible server (moto, started by the jest global setup):
 * what is published is in the bucket, a worker with an empty cache gets it back hash-checked, a
 * tampered object or cached copy is caught, large files go up in parts, a LoRA base kept in the bucket
 * loads on another "machine" (another cache directory), and the cache stays under its limit.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { fileHashes, loadCheckpointChecked } from '../../activities/engine';
import { fetchArtifact, getJson, hashArtifact, storeAt, type ArtifactStore } from '../../activities/store';
import { evictCache } from '../../activities/store-cache';
import { parseS3Uri, s3Client, StoreError } from '../../activities/store-s3';
import type { CheckpointRef } from '../../activities/types';
import { baseRefOf, saveCheckpoint } from '../../engine/checkpoint';
import { modelPresets } from '../../engine/config';
import { isAdapterName, loraSchema } from '../../engine/lora';
import { initWeights } from '../../engine/model';
import { sha256 } from '../../util/canonical';
import { writeFileAtomic } from '../../util/files';

const bucket = `store-test-${process.pid}`;
const root = `s3://${bucket}/runs`;
const base = mkdtempSync(join(tmpdir(), 'operaflow-store-'));
let cacheN = 0;

/** A fresh cache directory: what a worker on another machine starts with. */
function freshCache(): string {
  const dir = join(base, `cache-${cacheN++}`);
  process.env.OPERAFLOW_CACHE_DIR = dir;
  return dir;
}

async function objectBytes(uri: string): Promise<Buffer> {
  const { bucket: b, key } = parseS3Uri(uri);
  const out = await s3Client().send(new GetObjectCommand({ Bucket: b, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

/** Writes `bytes` as a run's file, publishes it; returns its uri and sha256. */
async function publishBytes(store: ArtifactStore, name: string, bytes: Buffer) {
  const file = await writeFileAtomic(join(join(store.localRoot, 'run-a'), name), bytes);
  return { uri: await store.publish(file), sha256: file.sha256, bytes: file.bytes };
}

beforeAll(async () => {
  if (!process.env.OPERAFLOW_S3_ENDPOINT) throw new Error('the jest global setup sets OPERAFLOW_S3_ENDPOINT');
  await s3Client().send(new CreateBucketCommand({ Bucket: bucket }));
});
afterAll(() => {
  delete process.env.OPERAFLOW_CACHE_DIR;
  rmSync(base, { recursive: true, force: true });
});

test('a published file is in the bucket under <prefix>/<run>/…, and a worker with an empty cache reads it back verified', async () => {
  freshCache();
  const data = { hello: 'world', n: [1, 2, 3] };
  const ref = await publishBytes(storeAt(root), 'rollouts/shard-0.json', Buffer.from(JSON.stringify(data)));
  expect(ref.uri).toBe(`${root}/run-a/rollouts/shard-0.json`);
  expect(sha256(await objectBytes(ref.uri))).toBe(ref.sha256);
  expect(await hashArtifact(ref.uri)).toEqual({ sha256: ref.sha256, bytes: ref.bytes });

  const cache = freshCache();
  expect(await getJson(ref)).toEqual(data);
  const cached = join(cache, 's3', bucket, 'runs', 'run-a', 'rollouts', 'shard-0.json');
  // Read once more: the same cached file (a download lands under a new inode), not a second download.
  const inode = statSync(cached).ino;
  expect(await fetchArtifact(ref.uri, ref.sha256)).toBe(cached);
  expect(statSync(cached).ino).toBe(inode);

  // A corrupted cached copy is not trusted: it is fetched again.
  writeFileSync(cached, 'garbage');
  expect(await getJson(ref)).toEqual(data);
  expect(sha256(readFileSync(cached))).toBe(ref.sha256);
});

test('an object replaced in the bucket, a missing object and an unreachable endpoint are clear errors', async () => {
  freshCache();
  const ref = await publishBytes(storeAt(root), 'scores/shard-1.json', Buffer.from('{"a":1}'));
  const { key } = parseS3Uri(ref.uri);
  await s3Client().send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: '{"a":2}' }));
  freshCache();
  await expect(getJson(ref)).rejects.toThrow(`does not match the recorded ${ref.sha256}`);

  const missing = { ...ref, uri: `${root}/run-a/scores/nope.json` };
  const err = await getJson(missing).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(StoreError);
  expect((err as StoreError).message).toMatch(/nope\.json: no such object in the store/);
  expect((err as StoreError).unreachable).toBe(false);

  const endpoint = process.env.OPERAFLOW_S3_ENDPOINT;
  process.env.OPERAFLOW_S3_ENDPOINT = 'http://127.0.0.1:1';
  try {
    freshCache();
    const down = await getJson(ref).catch((e: unknown) => e);
    expect(down).toBeInstanceOf(StoreError);
    expect((down as StoreError).unreachable).toBe(true);
    expect((down as StoreError).message).toMatch(/S3 endpoint http:\/\/127\.0\.0\.1:1 is unreachable \(ECONNREFUSED\)/);
  } finally {
    process.env.OPERAFLOW_S3_ENDPOINT = endpoint;
  }
});

test('a file larger than one part goes up as a multipart upload and comes back byte for byte', async () => {
  freshCache();
  const big = randomBytes(20 * 1024 * 1024 + 123);
  const ref = await publishBytes(storeAt(root), 'checkpoints/big.bin', big);
  const { key } = parseS3Uri(ref.uri);
  const head = await s3Client().send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  // The ETag of an object uploaded in parts is "<md5 of the parts' md5s>-<part count>" (8 MiB parts).
  expect(head.ETag).toMatch(/-3"$/);
  const open = await s3Client().send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  expect(open.Uploads ?? []).toEqual([]);
  freshCache();
  expect(readFileSync(await fetchArtifact(ref.uri, ref.sha256)).equals(big)).toBe(true);
});

test('a LoRA checkpoint whose base is kept in the bucket loads on a worker that has neither', async () => {
  freshCache();
  const store = storeAt(root);
  const config = { ...modelPresets.tiny, lora: loraSchema.parse({ rank: 2 }) };
  const { lora: _lora, ...plain } = config;
  const weights = initWeights(config, 3);
  for (const [name, w] of weights) if (isAdapterName(name)) w.fill(0.01);
  const baseDir = join(join(store.localRoot, 'run-a'), 'checkpoints', 'base');
  const baseFiles = await saveCheckpoint(baseDir, {
    config: plain,
    weights: new Map([...weights].filter(([n]) => !isAdapterName(n))),
  });
  for (const f of baseFiles) await store.publish(f);
  const baseRef = { ...(await baseRefOf(baseDir)), dir: store.uriOf(baseDir) };

  const dir = join(join(store.localRoot, 'run-a'), 'checkpoints', 'iter-0001');
  const files = await saveCheckpoint(dir, { config, weights, base: baseRef });
  for (const f of files) await store.publish(f);
  const hashes = fileHashes(files);
  const ref: CheckpointRef = {
    uri: store.uriOf(dir),
    iteration: 1,
    sha256: hashes['adapter_model.safetensors']!,
    files: hashes,
  };
  expect(ref.uri).toBe(`${root}/run-a/checkpoints/iter-0001`);

  freshCache();
  const loaded = await loadCheckpointChecked(ref);
  expect(loaded.base?.dir).toBe(`${root}/run-a/checkpoints/base`);
  expect([...loaded.weights.keys()].sort()).toEqual([...weights.keys()].sort());
  for (const [name, w] of weights) expect(Array.from(loaded.weights.get(name)!)).toEqual(Array.from(w));

  // The base's weights changed in the bucket: the checkpoint is refused, naming the file.
  const { key } = parseS3Uri(`${baseRef.dir}/model.safetensors`);
  await s3Client().send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'not weights' }));
  freshCache();
  await expect(loadCheckpointChecked(ref)).rejects.toThrow(/model\.safetensors: sha256 .* does not match/);
});

test('the cache evicts least recently used files down to its limit, never one in use or a partial log', async () => {
  const cache = freshCache();
  const dir = join(cache, 's3', bucket, 'runs', 'r');
  mkdirSync(dir, { recursive: true });
  const now = Date.now();
  const file = (name: string, ageMinutes: number) => {
    writeFileSync(join(dir, name), Buffer.alloc(1000));
    const t = new Date(now - ageMinutes * 60_000);
    utimesSync(join(dir, name), t, t);
  };
  file('oldest', 30);
  file('old', 20);
  file('recent', 10);
  file('in-use', 0.1);
  file('shard-0.attempt-1.partial.jsonl', 60);
  const removed = await evictCache(cache, 2500, now);
  expect(removed).toBe(2000);
  const left = ['oldest', 'old', 'recent', 'in-use', 'shard-0.attempt-1.partial.jsonl'].filter((n) => {
    try {
      readFileSync(join(dir, n));
      return true;
    } catch {
      return false;
    }
  });
  expect(left).toEqual(['recent', 'in-use', 'shard-0.attempt-1.partial.jsonl']);
});
