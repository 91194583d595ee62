/**
 * Small helpers the service managers share: is a local port free, is a file an executable, the end of a
 * log file for an error message, whether a pid is alive, starting a server detached, waiting for it to
 * answer its health check, and stopping it.
 */
import { spawn } from 'node:child_process';
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

/**
 * Starts a long-lived server detached from this process (it outlives the command, e.g. `services:up`,
 * and runs in its own session, away from a terminal's Ctrl-C), appending its output to `logFile`;
 * writes `pidText(pid)` to `pidFile` and waits for `healthy`. When the server does not come up it is
 * killed, its pid file removed, and the error says what did not start, why, and the end of its log.
 */
export async function startDetached(opts: {
  what: string;
  command: string;
  args: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  logFile: string;
  pidFile: string;
  pidText?: (pid: number) => string;
  healthy: (alive: () => boolean) => Promise<void>;
}): Promise<number> {
  const out = fs.openSync(opts.logFile, 'a');
  const child = spawn(opts.command, opts.args, {
    detached: true,
    stdio: ['ignore', out, out],
    cwd: opts.cwd,
    env: opts.env ?? process.env,
  });
  fs.closeSync(out);
  const pid = child.pid;
  if (!pid) throw new Error(`Could not start ${opts.command}.`);
  let exited = false;
  child.on('exit', () => (exited = true));
  child.unref();
  fs.writeFileSync(opts.pidFile, opts.pidText?.(pid) ?? String(pid));
  try {
    await opts.healthy(() => !exited);
  } catch (err) {
    if (!exited) process.kill(pid, 'SIGKILL');
    fs.rmSync(opts.pidFile, { force: true });
    throw new Error(
      `${opts.what} did not come up: ${(err as Error).message}\n--- ${opts.logFile} ---\n${tail(opts.logFile)}`,
    );
  }
  return pid;
}

/** SIGTERM, then SIGKILL when `pid` is still alive after `graceMs`; nothing when it is already gone. */
export async function terminate(pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isPidAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isPidAlive(pid)) process.kill(pid, 'SIGKILL');
}

export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
