/**
 * ONNX Runtime's CUDA provider in onnxruntime-node, as `npm run gpu:setup` installs it (CI runs it
 * before the tests; on a machine without the install the last two tests are skipped, saying so).
 * - Every known way a GPU provider fails is told in words, from the messages ORT and the loader print.
 * - On a machine without an NVIDIA driver, `operaflow gpu check` gets to loading the provider and fails
 *   with "no NVIDIA driver" (with a driver and a GPU, it passes).
 * - With a stand-in libcuda.so.1 (built here with cc), the provider library loads into onnxruntime-node
 *   and runs its CUDA setup, which fails at cudaSetDevice: the proof that onnxruntime-gpu's provider and
 *   onnxruntime-node's core fit together (a symbol or version mismatch would fail before that).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cudaInstallProblem, cudaLoadError, explainGpuFailure } from '../../engine/cuda-libs';
import { CLI, ROOT } from '../integration/helpers';

test.each([
  [
    'Failed to load library …/libonnxruntime_providers_cuda.so with error: libcuda.so.1: cannot open shared object file: No such file or directory',
    /^no NVIDIA driver on this machine \(libcuda\.so\.1/,
  ],
  [
    'Failed to load library …/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory',
    /^a library the cuda provider needs is missing: libcublasLt\.so\.13 \(run `npm run gpu:setup`/,
  ],
  [
    'CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; GPU=-1 ; expr=cudaSetDevice(info_.device_id);',
    /^the NVIDIA driver is older than the CUDA 13 runtime .*R580/,
  ],
  [
    'CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; expr=cudaSetDevice(info_.device_id);',
    /^no CUDA device is visible to this process/,
  ],
  [
    '…/libonnxruntime_providers_cuda.so: undefined symbol: _ZN11onnxruntime12ProviderHost',
    /^the cuda provider does not fit onnxruntime-node .*run `npm run gpu:setup` \(or `operaflow gpu setup`\) again/,
  ],
  [
    'BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer of size 4294967296',
    /^out of GPU memory: use smaller batches \(grpo\.miniBatchSize, coldStart\.batchSize\)/,
  ],
  ['CUDA failure 2: out of memory ; GPU=0 ; expr=cudaMalloc(&p, size);', /^out of GPU memory/],
])('a GPU failure is explained: %s', (message, explanation) => {
  expect(explainGpuFailure('cuda', message)).toMatch(explanation);
});

test('an error none of the known ways explain is left to its own message', () => {
  expect(explainGpuFailure('cuda', 'Non-zero status code returned while running Gather node')).toBeUndefined();
});

const gpuCheck = (env: NodeJS.ProcessEnv = process.env) =>
  spawnSync(process.execPath, [...CLI, 'gpu', 'check'], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 });

let installed = false;
beforeAll(async () => {
  const problem = await cudaInstallProblem();
  installed = problem === undefined;
  if (!installed) console.warn(`CUDA provider tests skipped: ${problem}`);
});

const withInstall = (name: string, fn: () => void) =>
  test(
    name,
    () => {
      if (!installed) return; // said in beforeAll; CI installs it
      fn();
    },
    180_000,
  );

withInstall(
  'gpu check loads the installed provider: without a driver it says "no NVIDIA driver", with one it passes',
  () => {
    const noDriver = /libcuda\.so\.1/.test(cudaLoadError() ?? '');
    const r = gpuCheck();
    if (noDriver) {
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(
        /gpu check: providers \[cuda\] cannot run: execution provider "cuda": no NVIDIA driver on this machine/,
      );
    } else {
      expect(r.stdout).toMatch(/max \|difference\| from the CPU provider .* \(ok\)/);
      expect(r.status).toBe(0);
    }
  },
);

withInstall('with a stand-in driver library the provider loads into onnxruntime-node and reaches cudaSetDevice', () => {
  if (!/libcuda\.so\.1/.test(cudaLoadError() ?? '')) return; // a real driver is here: the test above ran the GPU
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'operaflow-stub-cuda-'));
  try {
    // The provider's one driver symbol; the CUDA runtime finds no driver entry points and reports error 35.
    fs.writeFileSync(path.join(dir, 'stub.c'), 'int cuTensorMapEncodeTiled(void) { return 100; }\n');
    const cc = spawnSync('cc', ['-shared', '-fPIC', '-Wl,-soname,libcuda.so.1', '-o', 'libcuda.so.1', 'stub.c'], {
      cwd: dir,
      encoding: 'utf8',
    });
    expect(cc.stderr).toBe('');
    const r = gpuCheck({ ...process.env, LD_LIBRARY_PATH: dir });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /the NVIDIA driver is older than the CUDA 13 runtime .*\[CUDA failure 35: .*cudaSetDevice/,
    );
    expect(r.stderr).not.toMatch(/undefined symbol|cannot open shared object/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
