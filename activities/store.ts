/**
 * The artifact store (`runtime.artifacts`): a local directory (a path or `file://` URI; default
 * `.operaflow/artifacts`) or an object store (`s3://bucket/prefix`). Either way a run's files live under
 * `<root>/<run>/…` and every one is recorded in `artifacts` with its sha256, which every read checks.
 *
 * Stages write into `<localRoot>/<run>` on local disk, then `publish` makes each file durable in the store
 * before the artifact row is written (upload, then record), so a row never names an object that is not
 * there. For a local store `localRoot` is the store itself: writes are atomic (temp + rename) and publishing
 * is nothing more. For S3 it is this worker's cache mirror of the run (store-cache.ts), so what a worker
 * wrote it never downloads again; another worker downloads it once and keeps it.
 * Reads take a URI (`file://` or `s3://`) and return a local path, so a stage reads the same way
 * whichever store wrote the file.
 */
import { appendFile, readFile, rm } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Db } from '../db/client';
import { sha256 } from '../util/canonical';
import { hashFile, writeFileAtomic, type WrittenFile } from '../util/files';
import { inPhase } from '../util/phase';
import { recordArtifact } from '../db/queries';
import { cacheLimitBytes, cacheRoot, cachedCopyMatches, cachedPath, evictCache } from './store-cache';
import {
  downloadVerified,
  hashObject,
  joinKey,
  parseS3Uri,
  removePrefix,
  s3Uri,
  uploadFile,
  type S3Location,
} from './store-s3';
import type { ArtifactRef } from './types';

export const uriToPath = (uri: string): string => (uri.startsWith('file://') ? fileURLToPath(uri) : resolve(uri));
export const pathToUri = (path: string): string => pathToFileURL(resolve(path)).href;
export const isS3 = (uri: string): boolean => uri.startsWith('s3://');

export interface ArtifactStore {
  /** The root as configured, normalised: an absolute directory, or `s3://bucket/prefix`. */
  readonly root: string;
  /** The local directory holding each run's files on this worker (`<root>/<run>`, or its cache mirror). */
  readonly localRoot: string;
  /** Makes a file written under `localRoot` durable in the store; returns its URI. */
  publish(file: WrittenFile): Promise<string>;
  /** The URI of a file or directory (a checkpoint) under `localRoot`, once published. */
  uriOf(dir: string): string;
  /** Removes a directory under `localRoot`, here and in the store (superseded partial checkpoints). */
  remove(dir: string): Promise<void>;
}

/** The path of `path` below `base`, refused when it is not below it (a store never writes elsewhere). */
function below(base: string, path: string): string {
  const rel = relative(base, resolve(path));
  if (!rel || rel.startsWith('..') || isAbsolute(rel)) throw new Error(`${path} is not inside the store's ${base}`);
  return rel;
}

function localStore(root: string): ArtifactStore {
  const dir = uriToPath(root);
  return {
    root: dir,
    localRoot: dir,
    publish: async (file) => pathToUri(file.path),
    uriOf: pathToUri,
    remove: (d) => rm(d, { recursive: true, force: true }),
  };
}

/** Evicting walks the cache: done after every 1/20 of its limit added, and when a process starts. */
let addedSinceEviction = Number.POSITIVE_INFINITY;
async function added(bytes: number): Promise<void> {
  addedSinceEviction += bytes;
  if (addedSinceEviction < cacheLimitBytes() / 20) return;
  addedSinceEviction = 0;
  await evictCache();
}

function s3Store(root: string): ArtifactStore {
  const loc = parseS3Uri(root);
  const mirror = cachedPath(loc, cacheRoot());
  /** Where a file under the mirror lives in the bucket. */
  const locOf = (path: string): S3Location => ({ bucket: loc.bucket, key: joinKey(loc.key, below(mirror, path)) });
  return {
    root: s3Uri(loc),
    localRoot: mirror,
    publish: async (file) => {
      await uploadFile(file.path, locOf(file.path));
      await added(file.bytes);
      return s3Uri(locOf(file.path));
    },
    uriOf: (path) => s3Uri(locOf(path)),
    remove: async (d) => {
      await rm(d, { recursive: true, force: true });
      await removePrefix(locOf(d));
    },
  };
}

const stores = new Map<string, ArtifactStore>();

/** The store at `root` (`runtime.artifacts`). */
export function storeAt(root: string): ArtifactStore {
  const key = `${root}\0${cacheRoot()}`;
  let store = stores.get(key);
  if (!store) {
    store = isS3(root) ? s3Store(root) : localStore(root);
    stores.set(key, store);
  }
  return store;
}

/**
 * A local path holding the object at `uri`: the file itself for a local store; for S3, the cached
 * copy, downloaded (and checked against `sha256`) unless the cache already holds it.
 */
export function fetchArtifact(uri: string, sha256: string): Promise<string> {
  if (!isS3(uri)) return Promise.resolve(uriToPath(uri));
  return inPhase('storage', async () => {
    const loc = parseS3Uri(uri);
    const path = cachedPath(loc);
    if (await cachedCopyMatches(path, sha256)) return path;
    await added(await downloadVerified(loc, path, sha256));
    return path;
  });
}

/**
 * A local directory holding the checkpoint at `uri` with `files` (name → sha256): the directory itself
 * for a local store; for S3, the cache's copy, with what it lacks fetched. The caller verifies it
 * (verifyCheckpointFiles).
 */
export function fetchCheckpointDir(uri: string, files: Record<string, string>): Promise<string> {
  if (!isS3(uri)) return Promise.resolve(uriToPath(uri));
  return inPhase('storage', async () => {
    await Promise.all(Object.entries(files).map(([name, sha]) => fetchArtifact(`${uri}/${name}`, sha)));
    return cachedPath(parseS3Uri(uri));
  });
}

/** sha256 and size of what the store holds at `uri` (read from the store itself, not a cache). */
export function hashArtifact(uri: string): Promise<{ sha256: string; bytes: number }> {
  return isS3(uri) ? hashObject(parseS3Uri(uri)) : hashFile(uriToPath(uri));
}

export interface ArtifactKey {
  runId: string;
  kind: string;
  iteration: number;
  name: string;
}

/** Writes `data` as JSON at `path` (under the store's localRoot), publishes and records it. */
export async function putJson(
  db: Db,
  store: ArtifactStore,
  key: ArtifactKey,
  path: string,
  data: unknown,
): Promise<ArtifactRef> {
  const ref = await inPhase('storage', async () => {
    const file = await writeFileAtomic(path, Buffer.from(JSON.stringify(data)));
    return { uri: await store.publish(file), sha256: file.sha256, bytes: file.bytes } satisfies ArtifactRef;
  });
  await recordArtifact(db, { ...key, ...ref });
  return ref;
}

/** Reads a JSON artifact and checks its sha256 (a corrupt or replaced file is an error, not silent). */
export async function getJson<T>(ref: ArtifactRef): Promise<T> {
  const bytes = await inPhase('storage', async () => readFile(await fetchArtifact(ref.uri, ref.sha256)));
  const digest = sha256(bytes);
  if (digest !== ref.sha256)
    throw new Error(`artifact ${ref.uri}: sha256 ${digest} does not match the recorded ${ref.sha256}`);
  return JSON.parse(bytes.toString('utf8')) as T;
}

/**
 * Per-item progress of a long activity, one JSON line per finished item, so that a retry after a crash
 * redoes only the item in progress. A torn last line (crash mid-write) is dropped.
 */
export class PartialLog<T> {
  constructor(readonly path: string) {}

  /** The file name, which heartbeat details carry so the next attempt can find it. */
  get name(): string {
    return basename(this.path);
  }

  async read(limit: number): Promise<T[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch {
      return [];
    }
    const items: T[] = [];
    for (const line of text.split('\n')) {
      if (items.length >= limit || !line) break;
      try {
        items.push(JSON.parse(line) as T);
      } catch {
        break;
      }
    }
    return items;
  }

  /**
   * Rewrites the log to exactly `items` (drops lines past the heartbeat's count), then appends. Not
   * fsynced: a log lost in a power cut only means its items are computed again.
   */
  async reset(items: T[]): Promise<void> {
    const text = items.map((i) => `${JSON.stringify(i)}\n`).join('');
    await inPhase('storage', () => writeFileAtomic(this.path, Buffer.from(text), false));
  }

  async append(item: T): Promise<void> {
    await inPhase('storage', () => appendFile(this.path, `${JSON.stringify(item)}\n`));
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
