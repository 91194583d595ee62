/**
 * A local S3-compatible server for the S3 artifact store and its tests: moto's server mode
 * (`moto_server`, path-style addressing, any credentials accepted, state in memory), run detached with a
 * pid file like the Temporal dev server. moto comes from PyPI, pinned, into a virtual environment in
 * ~/.cache/operaflow/moto-<version>/ shared by every checkout; that needs python3 with its venv module.
 * OPERAFLOW_S3_ENDPOINT names an external server instead: it is only health-checked, never started or stopped.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cacheDir } from '../util/cache-dir';
import { stateDir, withFileLock } from './paths';
import { isExecutable, isPidAlive, portIsFree, startDetached, tail, terminate, waitHealthy } from './process';

/** The one place the moto version and its pip requirements are written (flask pins: versions it was tested with). */
export const MOTO_PIN = {
  version: '5.2.5',
  requirements: ['moto[s3]==5.2.5', 'flask==3.1.3', 'flask-cors==6.0.5'],
} as const;

/**
 * The bucket a fresh local server holds, so `runtime.artifacts: s3://operaflow/…` works with nothing
 * else to set up (moto keeps everything in memory: a restarted server starts empty again).
 */
export const LOCAL_BUCKET = 'operaflow';

/** Creates LOCAL_BUCKET (moto accepts the unsigned PUT of its own API; any credentials are valid). */
async function createLocalBucket(endpoint: string): Promise<void> {
  const res = await fetch(`${endpoint}/${LOCAL_BUCKET}`, { method: 'PUT', signal: AbortSignal.timeout(10_000) });
  if (!res.ok && res.status !== 409)
    throw new Error(`creating bucket ${LOCAL_BUCKET} on ${endpoint}: HTTP ${res.status}`);
}

/** MinIO's well-known port, where S3 tools look first; OPERAFLOW_S3_PORT overrides it. */
export const DEFAULT_S3_PORT = 9000;

type Log = (line: string) => void;

export interface LocalS3 {
  /** `http://127.0.0.1:PORT`, or OPERAFLOW_S3_ENDPOINT. */
  endpoint: string;
  pid?: number;
  /** true: this call started it; false: it was already running, or is external. */
  started: boolean;
  /** Whether this checkout's pid file owns the server (so `down` stops it). */
  owned: boolean;
}

const files = () => {
  const dir = stateDir();
  // s3.pid: the server's pid on line 1 and its port on line 2 (the port may not be the default).
  return { pid: path.join(dir, 's3.pid'), log: path.join(dir, 's3.log') };
};

const motoDir = () => path.join(cacheDir(), `moto-${MOTO_PIN.version}`);
const motoBin = (dir = motoDir()) => path.join(dir, 'bin', 'moto_server');

const endpointFor = (port: number) => `http://127.0.0.1:${port}`;

function parsePort(raw: string, name: string): number {
  const port = Number.parseInt(raw, 10);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`${name}=${raw} is not a port number.`);
  return port;
}

/** GET / must answer 200 with a ListAllMyBucketsResult: an S3 server that serves requests, not just an open port. */
export async function checkS3(
  endpoint: string,
  timeoutMs = 5_000,
): Promise<{ ok: true } | { ok: false; error: string }> {
  try {
    const res = await fetch(`${endpoint.replace(/\/+$/, '')}/`, { signal: AbortSignal.timeout(timeoutMs) });
    const body = await res.text();
    if (res.status === 200 && body.includes('ListAllMyBucketsResult')) return { ok: true };
    return { ok: false, error: `GET / answered HTTP ${res.status}: ${body.slice(0, 200).replace(/\s+/g, ' ')}` };
  } catch (err) {
    // fetch says only "fetch failed"; the reason (ECONNREFUSED, a timeout) is in its cause.
    const cause = (err as Error).cause as Error | undefined;
    return {
      ok: false,
      error: cause?.message ? `${(err as Error).message}: ${cause.message}` : (err as Error).message,
    };
  }
}

/** Until the server at `endpoint` answers (services/process.ts waitHealthy). */
const waitForS3 = (endpoint: string, timeoutMs: number, alive: () => boolean): Promise<void> =>
  waitHealthy(() => checkS3(endpoint, 2_000), { timeoutMs, intervalMs: 200, alive });

/** Runs a command with its output appended to logFile; resolves with the exit code (null: killed at the timeout). */
function runLogged(file: string, args: string[], logFile: string, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    fs.appendFileSync(logFile, `$ ${file} ${args.join(' ')}\n`);
    const out = fs.openSync(logFile, 'a');
    const child = spawn(file, args, { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/**
 * Console scripts and activate files name the interpreter by absolute path, the temporary directory's:
 * point them at the final one before the rename, so the renamed venv works and no reader ever sees it unfinished.
 */
function relocateVenvScripts(from: string, to: string): void {
  const bin = path.join(from, 'bin');
  for (const name of fs.readdirSync(bin)) {
    const file = path.join(bin, name);
    const stat = fs.lstatSync(file);
    if (!stat.isFile() || stat.size > 1 << 20) continue;
    const text = fs.readFileSync(file, 'latin1');
    if (text.includes(from)) fs.writeFileSync(file, text.split(from).join(to), { encoding: 'latin1', mode: stat.mode });
  }
}

async function installMoto(target: string, log: Log): Promise<void> {
  const python = 'python3';
  const probe = spawnSync(python, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `python3 is needed once to install moto, the local S3 server, and it does not run (${probe.error?.message ?? probe.stderr.trim()}). ` +
        'Install it (Debian/Ubuntu: `apt-get install -y python3 python3-venv`), or set OPERAFLOW_S3_ENDPOINT to a running S3-compatible server.',
    );
  }
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = `${target}.part-${process.pid}`;
  const installLog = path.join(path.dirname(target), `moto-install.log`);
  fs.writeFileSync(installLog, '');
  fs.rmSync(tmp, { recursive: true, force: true });
  log(`Installing moto ${MOTO_PIN.version} (the local S3 server) with pip into ${target} (once; about 30 s)...`);
  try {
    const venv = await runLogged(python, ['-m', 'venv', tmp], installLog, 5 * 60_000);
    if (venv !== 0) {
      throw new Error(
        `\`python3 -m venv\` failed (exit ${venv}): ${tail(installLog, 8)}\n` +
          "When python3's venv module (with ensurepip) is missing, install it (Debian/Ubuntu: `apt-get install -y python3-venv`), " +
          'or set OPERAFLOW_S3_ENDPOINT to a running S3-compatible server.',
      );
    }
    // pip reads PIP_INDEX_URL (and the rest of its configuration) itself; OPERAFLOW_PIP_INDEX_URL is ours.
    const index = process.env.OPERAFLOW_PIP_INDEX_URL;
    const pip = await runLogged(
      path.join(tmp, 'bin', 'python'),
      ['-m', 'pip', 'install', '--no-input', ...(index ? ['--index-url', index] : []), ...MOTO_PIN.requirements],
      installLog,
      15 * 60_000,
    );
    if (pip !== 0)
      throw new Error(`pip install ${MOTO_PIN.requirements.join(' ')} failed (exit ${pip}):\n${tail(installLog, 15)}`);
    const check = spawnSync(
      path.join(tmp, 'bin', 'python'),
      ['-c', 'import moto, moto.server; print(moto.__version__)'],
      { encoding: 'utf8' },
    );
    if (check.status !== 0 || check.stdout.trim() !== MOTO_PIN.version)
      throw new Error(`the installed moto does not load: ${(check.stderr || check.stdout).trim()}`);
    relocateVenvScripts(tmp, target);
    fs.renameSync(tmp, target);
    log(`Installed moto ${MOTO_PIN.version} at ${target} (log ${installLog})`);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new Error(`Could not install moto (the local S3 server): ${(err as Error).message}`, { cause: err });
  }
}

/** The path of `moto_server`, installing the pinned moto into the shared cache on first use. */
export async function findOrInstallMoto(log: Log = () => {}): Promise<string> {
  const bin = motoBin();
  if (isExecutable(bin)) return bin;
  fs.mkdirSync(cacheDir(), { recursive: true });
  // Several processes (checkouts, even) may need it at once; one installs, the others wait for it.
  return withFileLock(
    'moto-install',
    async () => {
      if (isExecutable(bin)) return bin;
      // A directory without moto_server is a broken copy (a rename always brings a complete one): replace it.
      fs.rmSync(motoDir(), { recursive: true, force: true });
      await installMoto(motoDir(), log);
      return bin;
    },
    {
      dir: cacheDir(),
      timeoutMs: 20 * 60_000,
      onWait: () => log('Waiting for another process that is installing moto (the local S3 server)...'),
    },
  );
}

/** pid and port of the server this checkout started, if that process still runs moto_server. */
function ownedS3(): { pid: number; port: number } | undefined {
  let lines: string[];
  try {
    lines = fs.readFileSync(files().pid, 'utf8').split('\n');
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(lines[0] ?? '', 10);
  const port = Number.parseInt(lines[1] ?? '', 10);
  if (!pid || !port || !isPidAlive(pid)) return undefined;
  try {
    // A pid can be recycled after a reboot or crash: only count it if it is still our server.
    if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('moto_server')) return undefined;
  } catch {
    // No /proc (macOS): trust the live pid.
  }
  return { pid, port };
}

/** SIGTERM, then SIGKILL after 10 s. */
/** OPERAFLOW_S3_PORT or 9000; when something else holds it, the next free port (the pid file records which). */
async function choosePort(log: Log): Promise<number> {
  const raw = process.env.OPERAFLOW_S3_PORT;
  const preferred = raw ? parsePort(raw, 'OPERAFLOW_S3_PORT') : DEFAULT_S3_PORT;
  if (await portIsFree(preferred)) return preferred;
  for (let port = preferred + 1; port <= Math.min(preferred + 100, 65535); port++) {
    if (await portIsFree(port)) {
      log(`Port ${preferred} on 127.0.0.1 is in use by another program; the local S3 server takes ${port} instead.`);
      return port;
    }
  }
  throw new Error(`No free port in ${preferred}-${preferred + 100} on 127.0.0.1; set OPERAFLOW_S3_PORT.`);
}

/**
 * Starts this checkout's moto server unless it already runs and answers (idempotent). With
 * OPERAFLOW_S3_ENDPOINT set, only checks that server.
 */
export async function startLocalS3(log: Log = () => {}): Promise<LocalS3> {
  const external = process.env.OPERAFLOW_S3_ENDPOINT;
  if (external) {
    const health = await checkS3(external, 10_000);
    if (!health.ok)
      throw new Error(
        `OPERAFLOW_S3_ENDPOINT=${external} is not a healthy S3 server (${health.error}). Start it, or unset OPERAFLOW_S3_ENDPOINT to let operaflow run a local one (moto).`,
      );
    return { endpoint: external.replace(/\/+$/, ''), started: false, owned: false };
  }
  return withFileLock(
    's3',
    async () => {
      const f = files();
      const owned = ownedS3();
      if (owned) {
        const endpoint = endpointFor(owned.port);
        try {
          await waitForS3(endpoint, 10_000, () => isPidAlive(owned.pid));
          return { endpoint, pid: owned.pid, started: false, owned: true };
        } catch (err) {
          // Its state is in memory anyway: a replacement loses nothing a broken server still had to give.
          log(`The local S3 server (pid ${owned.pid}) is not healthy (${(err as Error).message}); restarting it.`);
          await terminate(owned.pid, 10_000);
          fs.rmSync(f.pid, { force: true });
        }
      }
      const moto = await findOrInstallMoto(log);
      const port = await choosePort(log);
      const endpoint = endpointFor(port);
      const pid = await startDetached({
        what: 'The local S3 server (moto)',
        command: moto,
        args: ['-H', '127.0.0.1', '-p', String(port)],
        cwd: stateDir(),
        env: { ...process.env, PYTHONUNBUFFERED: '1' },
        logFile: f.log,
        pidFile: f.pid,
        pidText: (p) => `${p}\n${port}\n`,
        healthy: (alive) => waitForS3(endpoint, 30_000, alive),
      });
      await createLocalBucket(endpoint);
      log(
        `Started S3 (moto ${MOTO_PIN.version}) on ${endpoint} with bucket ${LOCAL_BUCKET} (pid ${pid}, log ${f.log})`,
      );
      return { endpoint, pid, started: true, owned: true };
    },
    { onWait: () => log('Waiting for another operaflow process that is starting the local S3 server...') },
  );
}

/** Stops the server this checkout started. Returns whether one was running; an external one is never touched. */
export async function stopLocalS3(log: Log = () => {}): Promise<boolean> {
  if (process.env.OPERAFLOW_S3_ENDPOINT) return false;
  return withFileLock('s3', async () => {
    const owned = ownedS3();
    const pidFile = files().pid;
    if (!owned) {
      fs.rmSync(pidFile, { force: true });
      return false;
    }
    await terminate(owned.pid, 10_000);
    fs.rmSync(pidFile, { force: true });
    log(`Stopped S3 (pid ${owned.pid}, port ${owned.port})`);
    return true;
  });
}

/** What runs, without starting anything: the external endpoint, or this checkout's server, and whether moto is installed. */
export function localS3Status(): {
  external: string | undefined;
  running: { pid: number; port: number; endpoint: string } | undefined;
  installed: boolean;
  motoPath: string;
  log: string;
} {
  const owned = process.env.OPERAFLOW_S3_ENDPOINT ? undefined : ownedS3();
  return {
    external: process.env.OPERAFLOW_S3_ENDPOINT,
    running: owned && { ...owned, endpoint: endpointFor(owned.port) },
    installed: isExecutable(motoBin()),
    motoPath: motoBin(),
    log: files().log,
  };
}
