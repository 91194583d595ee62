/**
 * A local Temporal development server (`temporal server start-dev`, SQLite-backed, persisted in
 * `.operaflow/temporal.db`), run detached with a pid file so `services:up` can return and later
 * commands reuse it. Where the CLI comes from: temporal-cli.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isPidAlive, portIsFree, startDetached, terminate, waitHealthy } from './process';
import { Connection } from '@temporalio/client';
import { stateDir, withFileLock } from './paths';
import { findOrInstallTemporalCli } from './temporal-cli';

export const DEFAULT_TEMPORAL_PORT = 7233;

export interface LocalTemporal {
  address: string;
  pid?: number;
  /** true: this call started it; false: it was already running (ours or another checkout's). */
  started: boolean;
  /** Whether this checkout's pid file owns the server (so `down` stops it). */
  owned: boolean;
}

export function temporalPorts(): { port: number; uiPort: number } {
  const raw = process.env.OPERAFLOW_TEMPORAL_PORT;
  const port = raw ? Number.parseInt(raw, 10) : DEFAULT_TEMPORAL_PORT;
  if (!Number.isInteger(port) || port <= 0 || port > 64535)
    throw new Error(`OPERAFLOW_TEMPORAL_PORT=${raw} is not a port number.`);
  // 7233 → UI 8233, as in the Temporal docs.
  return { port, uiPort: port + 1000 };
}

const files = () => {
  const dir = stateDir();
  return {
    pid: path.join(dir, 'temporal.pid'),
    log: path.join(dir, 'temporal.log'),
    db: path.join(dir, 'temporal.db'),
  };
};

/** Connects and describes the `default` namespace: the server is up and has finished its own setup. */
export async function checkTemporal(
  address: string,
  timeoutMs = 5_000,
): Promise<{ ok: true } | { ok: false; error: string }> {
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    const conn = connection;
    await conn.withDeadline(Date.now() + timeoutMs, () =>
      conn.workflowService.describeNamespace({ namespace: 'default' }),
    );
    return { ok: true };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  } finally {
    await connection?.close().catch(() => {});
  }
}

/** Until the server at `address` answers (services/process.ts waitHealthy). */
const waitForTemporal = (address: string, timeoutMs: number, alive: () => boolean): Promise<void> =>
  waitHealthy(() => checkTemporal(address, 3_000), { timeoutMs, intervalMs: 500, alive });

/** pid of the server this checkout started, if that process still runs the Temporal dev server. */
export function ownedTemporalPid(): number | undefined {
  const { pid: pidFile } = files();
  let pid: number;
  try {
    pid = Number.parseInt(fs.readFileSync(pidFile, 'utf8'), 10);
  } catch {
    return undefined;
  }
  if (!pid || !isPidAlive(pid)) return undefined;
  try {
    // A pid can be recycled after a reboot or crash: only count it if it is still our server.
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmd.includes('start-dev')) return undefined;
  } catch {
    // No /proc (macOS): trust the live pid.
  }
  return pid;
}

/** Starts the dev server unless one already answers on the port. Idempotent. */
export async function startLocalTemporal(log: (line: string) => void = () => {}): Promise<LocalTemporal> {
  const { port, uiPort } = temporalPorts();
  const address = `127.0.0.1:${port}`;
  return withFileLock(
    'temporal',
    async () => {
      const owned = ownedTemporalPid();
      if (owned) {
        await waitForTemporal(address, 60_000, () => isPidAlive(owned)).catch((err: Error) => {
          throw new Error(
            `The Temporal server this checkout started (pid ${owned}) is not healthy: ${err.message}. Run \`npm run services:down\` and retry; log: ${files().log}`,
          );
        });
        return { address, pid: owned, started: false, owned: true };
      }
      if (!(await portIsFree(port))) {
        // Port 7233 is Temporal's well-known default: a healthy server there (another checkout's,
        // or the user's own) is reused rather than fought over; `down` leaves it alone.
        const health = await checkTemporal(address);
        if (health.ok) {
          log(`Using the Temporal server already running on ${address} (not started by this checkout)`);
          return { address, started: false, owned: false };
        }
        throw new Error(
          `Port ${port} on 127.0.0.1 is in use by something that is not a healthy Temporal server (${health.error}). Free it, set OPERAFLOW_TEMPORAL_PORT, or set TEMPORAL_ADDRESS.`,
        );
      }
      const cli = await findOrInstallTemporalCli(log);
      const f = files();
      const pid = await startDetached({
        what: 'The Temporal dev server',
        command: cli,
        args: [
          'server',
          'start-dev',
          '--ip',
          '127.0.0.1',
          '--port',
          String(port),
          '--ui-port',
          String(uiPort),
          '--db-filename',
          f.db,
          // WAL without an fsync per commit: a killed server (the chaos test SIGKILLs it) loses nothing,
          // a power cut may lose the last commits; each step between two stages is several commits, which
          // on a disk with slow fsyncs would dominate the time between stages.
          '--sqlite-pragma',
          'journal_mode=wal',
          '--sqlite-pragma',
          'synchronous=normal',
          '--log-level',
          'warn',
        ],
        cwd: stateDir(),
        logFile: f.log,
        pidFile: f.pid,
        healthy: (alive) => waitForTemporal(address, 60_000, alive),
      });
      log(`Started Temporal on ${address} (UI http://127.0.0.1:${uiPort}, pid ${pid}, db ${f.db}, log ${f.log})`);
      return { address, pid, started: true, owned: true };
    },
    { onWait: () => log('Waiting for another operaflow process that is starting Temporal...') },
  );
}

/** Stops the server this checkout started (SIGTERM, then SIGKILL after 15 s). Returns whether one was running. */
export async function stopLocalTemporal(log: (line: string) => void = () => {}): Promise<boolean> {
  return withFileLock('temporal', async () => {
    const pid = ownedTemporalPid();
    const pidFile = files().pid;
    if (!pid) {
      fs.rmSync(pidFile, { force: true });
      return false;
    }
    await terminate(pid, 15_000);
    fs.rmSync(pidFile, { force: true });
    log(`Stopped Temporal (pid ${pid})`);
    return true;
  });
}
