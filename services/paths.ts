/**
 * Where operaflow keeps local state. Everything a checkout owns lives under `.operaflow/` in the repo
 * (git-ignored), except the PostgreSQL data directory when running as root: PostgreSQL refuses to run
 * as root, so its files belong to user `postgres`, who may not be able to reach a clone inside a
 * root-only folder (CI clones into /root/...). That directory goes to /var/tmp, keyed by the repo path
 * so two checkouts never share a cluster.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sha256 } from '../util/canonical';
import { isPidAlive, sleep } from './process';

export const repoRoot = path.resolve(__dirname, '..');

/** `.operaflow/` in the checkout: pid files, logs, the Temporal dev-server database, artifacts. */
export function stateDir(): string {
  const dir = process.env.OPERAFLOW_STATE_DIR ?? path.join(repoRoot, '.operaflow');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Short stable id of this checkout, so state outside the repo is not shared between clones. */
export function checkoutId(): string {
  return sha256(repoRoot).slice(0, 12);
}

/** Base directory of the local PostgreSQL cluster (data dirs, log); see the module comment. */
export function postgresBaseDir(): string {
  if (process.env.OPERAFLOW_PG_DIR) return path.resolve(process.env.OPERAFLOW_PG_DIR);
  return isRoot() ? path.join('/var/tmp', `operaflow-pg-${checkoutId()}`) : path.join(stateDir(), 'postgres');
}

/**
 * Cross-process mutex on a file in `.operaflow/`: `services:up`, `npm start` and jest may all try to
 * start the same services at once; without it two `initdb`s or two Temporal servers would race.
 * A lock whose holder died is taken over.
 */
export async function withFileLock<T>(
  name: string,
  fn: () => Promise<T>,
  opts: { timeoutMs?: number; onWait?: () => void; dir?: string } = {},
): Promise<T> {
  const file = path.join(opts.dir ?? stateDir(), `${name}.lock`);
  const deadline = Date.now() + (opts.timeoutMs ?? 15 * 60_000);
  let warned = false;
  for (;;) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(fs.readFileSync(file, 'utf8') || '0', 10);
      if (!holder || !isPidAlive(holder)) {
        fs.rmSync(file, { force: true });
        continue;
      }
      if (Date.now() > deadline)
        throw new Error(
          `Timed out waiting for ${file} (held by pid ${holder}). If no operaflow command is running, delete that file.`,
        );
      if (!warned) opts.onWait?.();
      warned = true;
      await sleep(250);
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(file, { force: true });
  }
}
