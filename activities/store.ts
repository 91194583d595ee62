/**
 * The artifact store: a directory per run (`runtime.artifactsDir/<run>/…`). Files are written to a
 * temporary name and renamed, so a crash leaves the old file or the new one, never a torn one; every
 * file is recorded in `artifacts` with its sha256, and reads verify it.
 * URIs are `file://` absolute paths; with workers on several machines the directory must be shared.
 */
import { appendFile, readFile, rm } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Db } from '../db/client';
import { sha256 } from '../util/canonical';
import { writeFileAtomic } from '../util/files';
import { recordArtifact } from '../db/queries';
import type { ArtifactRef } from './types';

export const uriToPath = (uri: string): string => (uri.startsWith('file://') ? fileURLToPath(uri) : resolve(uri));
export const pathToUri = (path: string): string => pathToFileURL(resolve(path)).href;

export interface ArtifactKey {
  runId: string;
  kind: string;
  iteration: number;
  name: string;
}

/** Writes `data` as JSON at `path` and records it; returns the reference the workflow passes on. */
export async function putJson(db: Db, key: ArtifactKey, path: string, data: unknown): Promise<ArtifactRef> {
  const bytes = Buffer.from(JSON.stringify(data));
  await writeFileAtomic(path, bytes);
  const ref: ArtifactRef = { uri: pathToUri(path), sha256: sha256(bytes), bytes: bytes.length };
  await recordArtifact(db, { ...key, ...ref });
  return ref;
}

/** Reads a JSON artifact and checks its sha256 (a corrupt or replaced file is an error, not silent). */
export async function getJson<T>(ref: ArtifactRef): Promise<T> {
  const bytes = await readFile(uriToPath(ref.uri));
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

  /** Rewrites the log to exactly `items` (drops lines past the heartbeat's count), then appends. */
  async reset(items: T[]): Promise<void> {
    await writeFileAtomic(this.path, Buffer.from(items.map((i) => `${JSON.stringify(i)}\n`).join('')));
  }

  async append(item: T): Promise<void> {
    await appendFile(this.path, `${JSON.stringify(item)}\n`);
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
