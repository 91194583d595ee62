/** Durable file writes: what the artifact store, checkpoints and partial logs build on. */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { sha256 } from './canonical';

export interface WrittenFile {
  path: string;
  sha256: string;
  bytes: number;
}

/**
 * Temp file + fsync + rename (+ fsync of the directory): a crash leaves the old file or the new one,
 * never a torn one, and once this resolves the new file survives a power loss.
 */
export async function writeFileAtomic(
  path: string,
  bytes: Buffer,
  /** false: atomic but not fsynced, for files whose loss costs only time (a partial log is a resume hint). */
  durable = true,
): Promise<WrittenFile> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(bytes);
    if (durable) await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  // The rename is durable only once the directory entry is: fsync the directory too.
  if (durable) {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
  const digest = sha256(bytes);
  await rememberHash(path, digest);
  return { path, sha256: digest, bytes: bytes.length };
}

/** sha256 (hex) and size of a file, read as a stream (checkpoints can exceed what one Buffer holds). */
export async function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

const hashes = new Map<string, { stamp: string; sha256: string }>();

/**
 * Records the sha256 of a file this process has just written or verified (the bytes it hashed are the
 * bytes on disk), so the next hashFileCached of it costs a stat.
 */
export async function rememberHash(path: string, digest: string): Promise<void> {
  const s = await stat(path);
  hashes.set(path, { stamp: `${s.size}:${s.mtimeMs}:${s.ino}`, sha256: digest });
}

/**
 * hashFile, remembered for this process while the file's size, mtime and inode stay the same: a LoRA
 * run's base (gigabytes) is verified by every checkpoint load, and rehashing it each time would cost
 * seconds per stage. Any write to the file changes its stamp, so it is hashed again.
 */
export async function hashFileCached(path: string): Promise<{ sha256: string; bytes: number }> {
  const s = await stat(path);
  const stampNow = `${s.size}:${s.mtimeMs}:${s.ino}`;
  const known = hashes.get(path);
  if (known?.stamp === stampNow) return { sha256: known.sha256, bytes: s.size };
  const fresh = await hashFile(path);
  hashes.set(path, { stamp: stampNow, sha256: fresh.sha256 });
  return fresh;
}
