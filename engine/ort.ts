// The only module that imports onnxruntime-node. Sessions are cached by the sha256 of the graph bytes
// (plus providers), so a graph built twice for the same (config, shape class) compiles once.
import { dirname, join } from 'node:path';
import { availableParallelism } from 'node:os';
import { runInThisContext } from 'node:vm';
import * as ort from 'onnxruntime-node';
import { cachedPromise } from '../util/cache';
import { sha256 } from '../util/canonical';
import { envNumber } from '../util/env';
import { cudaLoadError, explainGpuFailure, linkCudaLibraries } from './cuda-libs';

// Under Jest, test code runs in its own JS realm while ORT's native outputs are typed arrays of Node's
// main realm, and onnxruntime-common type-checks with `instanceof`. When the realms differ we point its
// type table at the main-realm constructors and re-view (zero-copy) arrays crossing the boundary, so the
// engine behaves identically under Jest and in production (where this is a no-op).
type Typed = Float32Array | Float64Array | BigInt64Array | Uint8Array;
type Kind = 'float32' | 'float64' | 'int64' | 'bool';
type Ctor = new (b: ArrayBufferLike, o: number, n: number) => Typed;
const localArray: Record<Kind, Ctor> = {
  float32: Float32Array,
  float64: Float64Array,
  int64: BigInt64Array,
  bool: Uint8Array,
};
const mainArray = runInThisContext(
  '({ float32: Float32Array, float64: Float64Array, int64: BigInt64Array, bool: Uint8Array })',
) as Record<Kind, Ctor>;
const crossRealm = mainArray.float32 !== localArray.float32;
if (crossRealm) {
  const common = require.resolve('onnxruntime-common', { paths: [dirname(require.resolve('onnxruntime-node'))] });
  const mapping = require(join(dirname(common), 'tensor-impl-type-mapping.js')) as {
    NUMERIC_TENSOR_TYPE_TO_TYPEDARRAY_MAP: Map<string, unknown>;
    checkTypedArray?: () => void;
  };
  mapping.checkTypedArray?.(); // it fills the int64 entry lazily; run it first so our entries stick
  for (const k of ['float32', 'float64', 'int64'] as const)
    mapping.NUMERIC_TENSOR_TYPE_TO_TYPEDARRAY_MAP.set(k, mainArray[k]);
}
function view(data: Typed, kind: Kind, ctors: Record<Kind, Ctor>): Typed {
  const C = ctors[kind];
  return !crossRealm || data.constructor === C ? data : new C(data.buffer, data.byteOffset, data.length);
}
function kindOf(data: Typed): Kind {
  const tag = Object.prototype.toString.call(data);
  return tag === '[object Float32Array]'
    ? 'float32'
    : tag === '[object Float64Array]'
      ? 'float64'
      : tag === '[object BigInt64Array]'
        ? 'int64'
        : 'bool';
}

export interface TensorData {
  data: Float32Array | Float64Array | BigInt64Array | Uint8Array;
  dims: readonly number[];
}
export type Feeds = Record<string, TensorData>;

export const DEFAULT_PROVIDERS: readonly string[] = ['cpu'];

const installHints: Record<string, string> = {
  cuda: 'run `npm run gpu:setup` (or `operaflow gpu setup`) on this machine: it installs the CUDA provider and the CUDA 13 libraries from PyPI',
  tensorrt:
    'not set up by this project: `npm run gpu:setup` installs the CUDA provider only (use providers [cuda, cpu])',
  webgpu: 'the webgpu provider is bundled but needs a working GPU driver (Vulkan on Linux)',
  dml: 'DirectML is only available on Windows builds of onnxruntime-node',
  coreml: 'CoreML is only available on macOS builds of onnxruntime-node',
};

function installHint(provider: string): string {
  return (
    installHints[provider] ??
    `execution provider "${provider}" is not part of onnxruntime-node ${ort.env.versions.common}; supported here: ${ort
      .listSupportedBackends()
      .map((b) => b.name)
      .join(', ')}`
  );
}

/** The CUDA libraries linked into onnxruntime-node's folder, once per process (cuda-libs.ts). */
let cudaLinked: Promise<unknown> | undefined;
const linkCudaOnce = (): Promise<unknown> =>
  (cudaLinked ??= linkCudaLibraries().catch((err: unknown) => {
    cudaLinked = undefined; // `gpu setup` may run meanwhile: try again next time
    throw err;
  }));

/** A GPU provider's failure in words (cuda-libs.ts) when it is a known one, else the raw message with the install hint. */
function gpuFailure(providers: readonly string[], err: unknown, loading: boolean): Error | undefined {
  const gpu = providers.find((p) => p !== 'cpu');
  if (!gpu) return undefined;
  let msg = err instanceof Error ? err.message : String(err);
  if (gpu === 'cuda' && /Failed to load shared library/i.test(msg))
    msg = `${msg}: ${cudaLoadError() ?? 'no reason given'}`;
  const known = explainGpuFailure(gpu, msg);
  // ORT's CUDA errors carry a C++ signature before the reason: keep the reason.
  if (known)
    return new Error(`execution provider "${gpu}": ${known} [${(/CUDA failure.*/s.exec(msg)?.[0] ?? msg).trim()}]`, {
      cause: err,
    });
  if (loading && /provider|library|\.so|cuda|tensorrt|dlopen/i.test(msg))
    return new Error(`execution provider "${gpu}" failed to load (${msg}): ${installHint(gpu)}`, { cause: err });
  return undefined;
}

/** Fails loudly (with an install hint) for a provider that this onnxruntime-node cannot load. */
export function checkProviders(providers: readonly string[]): void {
  const known = new Map(ort.listSupportedBackends().map((b) => [b.name, b]));
  for (const p of providers) {
    const b = known.get(p);
    if (!b) throw new Error(`execution provider "${p}" is unavailable: ${installHint(p)}`);
  }
}

// One intra-op thread per core (measured fastest here); OPERAFLOW_ORT_THREADS overrides it for workers
// that share a machine.
const cores = envNumber('OPERAFLOW_ORT_THREADS') ?? availableParallelism();
const sessions = new Map<string, Promise<ort.InferenceSession>>();

export const graphHash = (bytes: Uint8Array): string => sha256(bytes);

/**
 * `lowMemory`: no memory arena and no memory pattern, so a session keeps nothing between runs. Measured
 * on a LoRA SFT step at Qwen3-0.6B's shape (batch 4 × 512, 24 GB machine): with them, the second step was
 * killed for memory (24 GiB); without, both steps ran (peak 22.2 GiB), the second in 48 s.
 */
export interface SessionOptions {
  lowMemory?: boolean;
}

async function createSession(
  bytes: Uint8Array,
  providers: readonly string[],
  options: SessionOptions = {},
): Promise<ort.InferenceSession> {
  checkProviders(providers);
  if (providers.includes('cuda')) await linkCudaOnce();
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: [...providers],
      intraOpNumThreads: cores,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      ...(options.lowMemory ? { enableCpuMemArena: false, enableMemPattern: false } : {}),
    });
  } catch (err) {
    throw gpuFailure(providers, err, true) ?? err;
  }
}

/**
 * Work done by ONNX Runtime in this process: session runs and the wall time inside them. Activities
 * report it per stage (how much of a stage was compute), and tests use it to prove a stage did no work.
 */
export interface EngineStats {
  runs: number;
  ms: number;
  /** Bytes fed to and returned by session runs: on a GPU provider, each is a host↔device copy. */
  bytesIn: number;
  bytesOut: number;
}
const stats: EngineStats = { runs: 0, ms: 0, bytesIn: 0, bytesOut: 0 };

/** A snapshot of the process-wide counters (subtract two snapshots to measure a span of work). */
export function engineStats(): EngineStats {
  return { ...stats };
}

export class Session {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly hash: string,
    readonly providers: readonly string[],
  ) {}

  static async get(
    bytes: Uint8Array,
    providers: readonly string[] = DEFAULT_PROVIDERS,
    options: SessionOptions = {},
  ): Promise<Session> {
    const hash = graphHash(bytes);
    const key = `${hash}|${providers.join(',')}|${options.lowMemory ? 'low' : ''}`;
    return new Session(
      await cachedPromise(sessions, key, () => createSession(bytes, providers, options)),
      hash,
      providers,
    );
  }

  /**
   * An uncached session that owns its graph, for graphs with weights baked in as initializers (ORT then
   * pre-packs them once, which roughly halves a decode step). The caller releases it when weights change.
   */
  static async owned(bytes: Uint8Array, providers: readonly string[] = DEFAULT_PROVIDERS): Promise<Session> {
    return new Session(await createSession(bytes, providers), 'owned', providers);
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  async run(feeds: Feeds): Promise<Record<string, TensorData>> {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      const kind = kindOf(t.data);
      inputs[name] = new ort.Tensor(kind, view(t.data, kind, kind === 'bool' ? localArray : mainArray) as never, [
        ...t.dims,
      ]);
    }
    const t0 = performance.now();
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await this.session.run(inputs);
    } catch (err) {
      throw gpuFailure(this.providers, err, false) ?? err; // out of GPU memory, mostly
    }
    stats.runs++;
    stats.ms += performance.now() - t0;
    for (const t of Object.values(feeds)) stats.bytesIn += t.data.byteLength;
    const result: Record<string, TensorData> = {};
    for (const [name, t] of Object.entries(out)) {
      const data = t.data as Typed;
      stats.bytesOut += data.byteLength;
      result[name] = { data: view(data, kindOf(data), localArray), dims: t.dims };
    }
    return result;
  }
}
