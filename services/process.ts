/**
 * Small helpers the service managers share: is a local port free, is a file an executable, the end of a
 * log file for an error message, and waiting for a started server to answer its health check.
 */
import fs from 'node:fs';
import net from 'node:net';

/** Whether nothing listens on 127.0.0.1:`port` (an exclusive bind succeeds). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The last `lines` lines of a log file, or '(no log)'. */
export function tail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Whether `file` is a regular file this process may execute. */
export function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `check` every `intervalMs` until it reports ok; throws with its last error when the server's
 * process has exited (`alive` says no) or `timeoutMs` has passed.
 */
export async function waitHealthy(
  check: () => Promise<{ ok: true } | { ok: false; error: string }>,
  opts: { timeoutMs: number; intervalMs: number; alive: () => boolean },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const r = await check();
    if (r.ok) return;
    last = r.error;
    if (!opts.alive()) throw new Error(`the server process exited: ${last}`);
    await sleep(opts.intervalMs);
  }
  throw new Error(`not healthy after ${Math.round(opts.timeoutMs / 1000)} s: ${last}`);
}
