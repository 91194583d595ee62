/**
 * `operaflow gpu setup`: installs ONNX Runtime's CUDA provider and the CUDA libraries (services/gpu-setup.ts).
 * `operaflow gpu check [--providers cuda]`: runs one small graph on the provider and on the CPU and
 * compares them; when the provider cannot run, says why (no driver, no device, a library missing, …).
 */
import { Graph } from '../../engine/graph';
import { Session } from '../../engine/ort';
import { setupCuda } from '../../services/gpu-setup';
import { maxAbsDiff } from '../../util/stats';
import { UsageError } from './connect';

export async function gpu(action: string, flags: { providers?: string }): Promise<number> {
  if (action === 'setup') {
    if (flags.providers !== undefined) throw new UsageError('gpu setup: --providers applies to `gpu check` only');
    await setupCuda({ log: (line) => console.error(line) });
    return 0;
  }
  if (action === 'check') return check(parseProviders(flags.providers ?? 'cuda', '--providers'));
  throw new UsageError(`gpu: unknown action "${action}" (expected setup or check)`);
}

/** `a,b` → ['a', 'b'], refusing an empty list; `what` names the flag or variable in the error. */
export function parseProviders(value: string, what: string): string[] {
  const list = value
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (!list.length)
    throw new UsageError(`${what}: expected a comma-separated list of execution providers, e.g. cuda,cpu`);
  return list;
}

/** How far the probe's outputs (softmax probabilities) may be from the CPU provider's. */
export const PROBE_TOLERANCE = 1e-4;

/**
 * Runs a 256×256 MatMul + Softmax on `providers` and on the CPU provider (both ops run on the CUDA
 * provider, so this exercises cuBLAS and a kernel of ORT's own) and returns the largest difference.
 * Throws the provider's failure in words (engine/ort.ts) when it cannot run.
 */
export async function probeProviders(providers: string[]): Promise<number> {
  const n = 256;
  const g = new Graph('float32');
  g.output(g.softmax(g.matmul(g.input('a', 'float32', [n, n]), g.input('b', 'float32', [n, n])), -1), 'c');
  const bytes = g.toBytes();
  const feeds = {
    a: { data: Float32Array.from({ length: n * n }, (_, k) => Math.sin(k) / 8), dims: [n, n] },
    b: { data: Float32Array.from({ length: n * n }, (_, k) => Math.cos(k) / 8), dims: [n, n] },
  };
  const onProvider = (await (await Session.get(bytes, providers)).run(feeds)).c!.data as Float32Array;
  const onCpu = (await (await Session.get(bytes, ['cpu'])).run(feeds)).c!.data as Float32Array;
  return maxAbsDiff(onCpu, onProvider);
}

async function check(providers: string[]): Promise<number> {
  let diff: number;
  try {
    diff = await probeProviders(providers);
  } catch (err) {
    console.error(`gpu check: providers [${providers.join(', ')}] cannot run: ${(err as Error).message}`);
    return 1;
  }
  const ok = diff <= PROBE_TOLERANCE;
  console.log(
    `gpu check: providers [${providers.join(', ')}] ran a 256×256 MatMul + Softmax; max |difference| from the CPU provider ${diff.toExponential(2)} (${ok ? 'ok' : `over ${PROBE_TOLERANCE}`})`,
  );
  return ok ? 0 : 1;
}
