/**
 * The object-store side of an `s3://bucket/prefix` artifact store (AWS S3 or any S3-compatible server:
 * MinIO, R2, GCS's S3 API, moto). Endpoint, region and credentials come from the standard AWS
 * environment (AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, …), plus OPERAFLOW_S3_ENDPOINT for an
 * S3-compatible server (path-style addressing). Uploads go through lib-storage (multipart for large
 * checkpoints); a PUT is atomic at the object level, so a reader sees the old object or the new one.
 * Downloads are hashed on the way and land under their final name only when the sha256 matches.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { causeChain } from '../util/errors';
import { rememberHash } from '../util/files';
import { s3Uri, type S3Location } from '../util/s3-uri';

export { joinKey, parseS3Uri, s3Uri, type S3Location } from '../util/s3-uri';

/** The S3 endpoint a client talks to, for messages. */
export const s3Endpoint = (): string => process.env.OPERAFLOW_S3_ENDPOINT ?? 'AWS S3';

let client: S3Client | undefined;
let clientEndpoint: string | undefined;

/** One client per process (it pools connections); rebuilt when OPERAFLOW_S3_ENDPOINT changes (tests). */
export function s3Client(): S3Client {
  const endpoint = process.env.OPERAFLOW_S3_ENDPOINT;
  if (client && clientEndpoint === endpoint) return client;
  client?.destroy();
  // The SDK warns on every process start that its releases after January 2027 need Node 22; this one is
  // pinned (package.json) and supports Node 20, so the warning would only bury the worker's own lines.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  client = new S3Client({
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    // The SDK retries throttling and 5xx; a stage that still fails is retried by Temporal.
    maxAttempts: 4,
  });
  clientEndpoint = endpoint;
  return client;
}

/** Network-level failures: the store cannot be reached (as opposed to an object that is missing). */
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN']);

/** An S3 failure as a message that names the object and what went wrong. */
export class StoreError extends Error {
  override name = 'StoreError';
  constructor(
    message: string,
    /** Whether the store itself could not be reached (rather than the object being missing or refused). */
    readonly unreachable: boolean,
  ) {
    super(message);
  }
}

/** The network error code in `err`, its causes or (errors wrapped across realms, e.g. under jest) its message. */
function networkCode(err: unknown): string | undefined {
  for (const { code } of causeChain(err)) if (typeof code === 'string' && NETWORK.has(code)) return code;
  const message = (err as { message?: unknown })?.message;
  return typeof message === 'string' ? [...NETWORK].find((c) => message.includes(c)) : undefined;
}

function describe(err: unknown, what: string): StoreError {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const code = networkCode(err);
  if (code) return new StoreError(`${what}: the S3 endpoint ${s3Endpoint()} is unreachable (${code})`, true);
  const status = e.$metadata?.httpStatusCode;
  if (e.name === 'NoSuchKey' || e.name === 'NotFound' || status === 404)
    return new StoreError(`${what}: no such object in the store (${e.name ?? 404})`, false);
  if (e.name === 'NoSuchBucket')
    return new StoreError(`${what}: the bucket does not exist at ${s3Endpoint()} (NoSuchBucket)`, false);
  if (status === 403 || e.name === 'AccessDenied' || e.name === 'InvalidAccessKeyId')
    return new StoreError(`${what}: access denied (${e.name ?? 403}; check the AWS credentials)`, false);
  return new StoreError(`${what}: ${e.name ?? 'error'}: ${e.message ?? String(err)}`, false);
}

/** Uploads a local file to `loc`; large files go up in parallel parts. */
export async function uploadFile(path: string, loc: S3Location): Promise<void> {
  try {
    const upload = new Upload({
      client: s3Client(),
      params: { Bucket: loc.bucket, Key: loc.key, Body: createReadStream(path) },
      partSize: 8 * 1024 * 1024,
      queueSize: 4,
    });
    await upload.done();
  } catch (err) {
    throw describe(err, `upload of ${s3Uri(loc)}`);
  }
}

async function getBody(loc: S3Location): Promise<Readable> {
  try {
    const out = await s3Client().send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
    return out.Body as Readable;
  } catch (err) {
    throw describe(err, `download of ${s3Uri(loc)}`);
  }
}

/**
 * Downloads `loc` to `dest` if its sha256 is `sha256`: streamed to a temporary name beside `dest`,
 * hashed on the way, renamed into place only when it matches (a reader never sees a partial file).
 */
export async function downloadVerified(loc: S3Location, dest: string, sha256: string): Promise<number> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    const body = await getBody(loc);
    const hashing = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, hashing, createWriteStream(tmp));
    } catch (err) {
      throw describe(err, `download of ${s3Uri(loc)}`);
    }
    const digest = hash.digest('hex');
    if (digest !== sha256)
      throw new StoreError(`${s3Uri(loc)}: sha256 ${digest} does not match the recorded ${sha256}`, false);
    await rename(tmp, dest);
    await rememberHash(dest, digest);
    return bytes;
  } finally {
    await rm(tmp, { force: true });
  }
}

/** sha256 and size of a stored object, read from the store (not a cache): what `operaflow verify` checks. */
export async function hashObject(loc: S3Location): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of await getBody(loc)) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
  } catch (err) {
    throw err instanceof StoreError ? err : describe(err, `download of ${s3Uri(loc)}`);
  }
  return { sha256: hash.digest('hex'), bytes };
}

/** Deletes every object under the prefix `loc.key/` (old partial checkpoints). */
export async function removePrefix(loc: S3Location): Promise<void> {
  const c = s3Client();
  try {
    let token: string | undefined;
    do {
      const page = await c.send(
        new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: `${loc.key}/`, ContinuationToken: token }),
      );
      const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
      if (keys.length) await c.send(new DeleteObjectsCommand({ Bucket: loc.bucket, Delete: { Objects: keys } }));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  } catch (err) {
    throw describe(err, `removing ${s3Uri(loc)}/`);
  }
}

/** Creates `bucket` unless it exists (scripts that bring their own bucket: bench, scale test). */
export async function ensureBucket(bucket: string): Promise<void> {
  try {
    await s3Client().send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw describe(err, `bucket ${bucket}`);
  }
}

/** Whether the bucket exists and these credentials may use it: `train` checks before recording a run. */
export async function checkBucket(loc: S3Location): Promise<string | undefined> {
  try {
    await s3Client().send(new HeadBucketCommand({ Bucket: loc.bucket }));
    return undefined;
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (e.$metadata?.httpStatusCode === 404 || e.name === 'NotFound')
      return `bucket ${loc.bucket} does not exist at ${s3Endpoint()} (create it first)`;
    return describe(err, `bucket ${loc.bucket}`).message;
  }
}
