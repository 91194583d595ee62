import os from 'node:os';
import path from 'node:path';

/** Per-user cache shared by checkouts: installed tools (Temporal CLI, moto, CUDA libraries), workflow bundles, artifacts. */
export function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'operaflow');
}
