/**
 * Where onnxruntime-node finds its CUDA execution provider. onnxruntime-node ships only the CPU provider
 * (its installer would fetch the CUDA one from a host many machines cannot reach); `operaflow gpu setup`
 * (services/gpu-setup.ts) installs onnxruntime-gpu's provider and the CUDA libraries it needs, all from
 * PyPI, into one directory with a manifest of their sha256. ONNX Runtime loads a provider from its own
 * folder, so each installed file is linked there (again after `npm ci` replaced node_modules); the
 * provider's RUNPATH was set to $ORIGIN at install, so it finds the CUDA libraries beside it without any
 * environment variable.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cacheDir } from '../util/cache-dir';
import { hashFileCached } from '../util/files';

/** The installed onnxruntime-node version: the CUDA provider must come from the same ONNX Runtime release. */
export const ORT_NODE_VERSION: string = (
  require(path.join(path.dirname(require.resolve('onnxruntime-node')), '..', 'package.json')) as { version: string }
).version;

/** What `gpu setup` records beside the files it installed. */
export interface CudaManifest {
  ortVersion: string;
  cudaVersion: string;
  cudnnVersion: string;
  files: Record<string, { sha256: string; size: number }>;
}

export const MANIFEST_FILE = 'operaflow-cuda.json';

/** The provider library's name: ORT loads it by this name from its own folder. */
export const CUDA_PROVIDER_LIBRARY = 'libonnxruntime_providers_cuda.so';

/** The install directory: OPERAFLOW_CUDA_DIR, else ~/.cache/operaflow/cuda-<onnxruntime version>. */
export function cudaLibDir(ortVersion = ORT_NODE_VERSION): string {
  return process.env.OPERAFLOW_CUDA_DIR ?? path.join(cacheDir(), `cuda-${ortVersion}`);
}

/** onnxruntime-node's native folder (libonnxruntime.so.1 and the binding), where ORT looks for providers. */
export function ortBinDir(): string {
  return path.join(
    path.dirname(require.resolve('onnxruntime-node')),
    '..',
    'bin',
    'napi-v6',
    process.platform,
    process.arch,
  );
}

export function readCudaManifest(dir = cudaLibDir()): CudaManifest | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_FILE), 'utf8')) as CudaManifest;
  } catch {
    return undefined;
  }
}

const SETUP = '`npm run gpu:setup` (or `operaflow gpu setup`)';

/**
 * Why the CUDA libraries in `dir` cannot serve onnxruntime-node `ortVersion`, or undefined when they
 * can: no manifest, a provider of another ONNX Runtime release, or a file missing or changed since it
 * was installed (each is checked against its sha256: ORT will load these into the process).
 */
export async function cudaInstallProblem(
  dir = cudaLibDir(),
  ortVersion = ORT_NODE_VERSION,
): Promise<string | undefined> {
  const manifest = readCudaManifest(dir);
  if (!manifest) return `its libraries are not installed in ${dir}: run ${SETUP} on this machine`;
  if (manifest.ortVersion !== ortVersion)
    return `${dir} holds the CUDA provider of ONNX Runtime ${manifest.ortVersion}, but onnxruntime-node is ${ortVersion} (a provider must match its runtime): run ${SETUP} again`;
  for (const [name, expected] of Object.entries(manifest.files)) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) return `${file} is missing: run ${SETUP} again`;
    if ((await hashFileCached(file)).sha256 !== expected.sha256)
      return `${file} has changed since it was installed (sha256 differs): run ${SETUP} again`;
  }
  return undefined;
}

/**
 * Links every installed file into onnxruntime-node's folder (replacing links to elsewhere); idempotent.
 * Throws the install problem when the files cannot serve this onnxruntime-node. Returns what it linked.
 */
export async function linkCudaLibraries(
  dir = cudaLibDir(),
  binDir = ortBinDir(),
  ortVersion = ORT_NODE_VERSION,
): Promise<string[]> {
  const problem = await cudaInstallProblem(dir, ortVersion);
  if (problem) throw new Error(`execution provider "cuda": ${problem}`);
  const linked: string[] = [];
  for (const name of Object.keys(readCudaManifest(dir)!.files)) {
    const link = path.join(binDir, name);
    const target = path.join(dir, name);
    let current: string | undefined;
    try {
      current = fs.readlinkSync(link);
    } catch {
      current = undefined; // absent, or a plain file: replaced below
    }
    if (current === target) continue;
    // Atomically: a process loading ORT at this moment sees the old link or the new one, never none.
    const tmp = `${link}.link-${process.pid}`;
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync(target, tmp);
    fs.renameSync(tmp, link);
    linked.push(name);
  }
  return linked;
}

/**
 * The dynamic loader's own words on why the CUDA provider does not load: ORT reports only "Failed to
 * load shared library" to its caller. process.dlopen throws dlerror's text; a library that does load
 * fails only for not being a Node addon ("did not self-register"), which means it is not the cause.
 */
export function cudaLoadError(dir = cudaLibDir()): string | undefined {
  for (const lib of ['libcuda.so.1', path.join(dir, CUDA_PROVIDER_LIBRARY)]) {
    try {
      process.dlopen({ exports: {} } as NodeJS.Module, lib, os.constants.dlopen.RTLD_LAZY);
    } catch (err) {
      const message = (err as Error).message;
      if (!/self-register/i.test(message)) return message;
    }
  }
  return undefined;
}

/**
 * What an operator should read when a GPU provider fails: each known way (no driver, no device, a
 * driver too old for the CUDA runtime, a library missing, a provider built for another runtime, out of
 * GPU memory) in words with what to do; undefined for an error none of these explain.
 */
export function explainGpuFailure(provider: string, message: string): string | undefined {
  if (/libcuda\.so\.1: cannot open shared object file/.test(message))
    return `no NVIDIA driver on this machine (libcuda.so.1, which the driver installs, is absent): run ${provider} stages on a machine with an NVIDIA GPU and driver (R580 or newer for CUDA 13), or use providers [cpu]`;
  const missing = /(lib[\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(message)?.[1];
  if (missing)
    return `a library the ${provider} provider needs is missing: ${missing} (run ${SETUP} on this machine; system libraries such as libz.so.1 come from the OS packages)`;
  if (/CUDA failure 35\b|cudaErrorInsufficientDriver|driver version is insufficient/i.test(message))
    return `the NVIDIA driver is older than the CUDA 13 runtime the ${provider} provider uses: upgrade the driver to R580 or newer`;
  if (/CUDA failure 100\b|no CUDA-capable device|cudaErrorNoDevice/i.test(message))
    return `no CUDA device is visible to this process (the driver is there, but no GPU: check nvidia-smi and CUDA_VISIBLE_DEVICES), or use providers [cpu]`;
  if (/undefined symbol|version `[^']+' not found|ORT_API_VERSION|API version/i.test(message))
    return `the ${provider} provider does not fit onnxruntime-node ${ORT_NODE_VERSION} (a provider built for another ONNX Runtime release): run ${SETUP} again`;
  if (
    /out of memory|CUDA failure 2\b|cudaErrorMemoryAllocation|CUBLAS_STATUS_ALLOC_FAILED|Failed to allocate memory|BFCArena::AllocateRawInternal/i.test(
      message,
    )
  )
    return `out of GPU memory: use smaller batches (grpo.miniBatchSize, coldStart.batchSize) or shorter sequences (grpo.maxNewTokens), fewer workers per GPU, or a GPU with more memory`;
  return undefined;
}
