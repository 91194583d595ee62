/**
 * A worker's local copy of an object store: `OPERAFLOW_CACHE_DIR` (default ~/.cache/operaflow/artifacts)
 * mirrors `s3://bucket/key` at `<dir>/s3/<bucket>/<key>`, so a checkpoint's files sit together under
 * their own names and load like a local checkpoint. Files a worker writes start here too (then are
 * uploaded), so it never downloads what it wrote. Every use re-checks a file's sha256 (hashes are
 * remembered per size/mtime/inode), so a changed or corrupt copy is fetched again, never trusted.
 * Bounded: `OPERAFLOW_CACHE_MAX_GB` (default 20); the least recently used files go first, never one
 * used in the last minute (a stage may be reading it) nor a stage's partial log (a resume point).
 */
import { readdir, rm, stat, utimes } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { envNumber } from '../util/env';
import { hashFileCached } from '../util/files';
import type { S3Location } from './store-s3';

const DEFAULT_MAX_GB = 20;
/** Files used this recently are never evicted. */
const IN_USE_MS = 60_000;

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.OPERAFLOW_CACHE_DIR) return resolve(env.OPERAFLOW_CACHE_DIR);
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'operaflow', 'artifacts');
}

/** The cache's size limit in bytes (OPERAFLOW_CACHE_MAX_GB, checked by util/env.ts). */
export const cacheLimitBytes = (env: NodeJS.ProcessEnv = process.env): number =>
  (envNumber('OPERAFLOW_CACHE_MAX_GB', env) ?? DEFAULT_MAX_GB) * 1024 ** 3;

/** Where the cache keeps its copy of an object. */
export const cachedPath = (loc: S3Location, root = cacheRoot()): string => join(root, 's3', loc.bucket, loc.key);

/** Whether the cached copy at `path` exists and has `sha256`; a hit counts as a use (for eviction). */
export async function cachedCopyMatches(path: string, sha256: string): Promise<boolean> {
  const found = await hashFileCached(path).catch(() => undefined);
  if (found?.sha256 !== sha256) return false;
  const now = new Date();
  await utimes(path, now, now).catch(() => {});
  return true;
}

/** Files that are not cached copies: temporaries of atomic writes, and partial logs (resume points). */
const evictable = (name: string): boolean => !name.includes('.tmp-') && !name.endsWith('.partial.jsonl');

async function listFiles(dir: string): Promise<{ path: string; bytes: number; used: number }[]> {
  const out: { path: string; bytes: number; used: number }[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(path)));
    else if (e.isFile() && evictable(e.name)) {
      const s = await stat(path).catch(() => undefined);
      if (s) out.push({ path, bytes: s.size, used: s.mtimeMs });
    }
  }
  return out;
}

/**
 * Brings the cache under its limit after something was added: least recently used first. Returns the
 * bytes removed. Other workers sharing the directory see the same files, so the walk is over the disk,
 * not over what this process remembers.
 */
export async function evictCache(root = cacheRoot(), limit = cacheLimitBytes(), now = Date.now()): Promise<number> {
  const files = await listFiles(join(root, 's3'));
  let total = files.reduce((a, f) => a + f.bytes, 0);
  if (total <= limit) return 0;
  let removed = 0;
  for (const f of files.sort((a, b) => a.used - b.used)) {
    if (total <= limit) break;
    if (now - f.used < IN_USE_MS) continue;
    await rm(f.path, { force: true });
    total -= f.bytes;
    removed += f.bytes;
  }
  return removed;
}
