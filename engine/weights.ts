// A model's parameters by HF name: deterministic initialisation and the feeds that pass them to a graph.
import type { LlamaConfig } from './config';
import { parameterShapes } from './llama';
import type { Feeds } from './ort';

export type Weights = Map<string, Float32Array>;

/** Deterministic init from a seed (splitmix32 + Box–Muller): N(0, 0.02²) matrices, unit norm gains, zero biases. */
export function initWeights(config: LlamaConfig, seed: number, only?: (name: string) => boolean): Weights {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
  const weights: Weights = new Map();
  for (const [name, shape] of parameterShapes(config)) {
    if (only && !only(name)) continue; // e.g. a fresh adapter for loaded base weights
    const n = shape.reduce((a, b) => a * b, 1);
    const w = new Float32Array(n);
    if (name.endsWith('.bias') || name.endsWith('.lora_B.weight'))
      w.fill(0); // a fresh adapter changes nothing
    else if (name.endsWith('.lora_A.weight')) {
      // PEFT's default: kaiming_uniform(a=√5), i.e. U(−1/√in, 1/√in).
      const bound = 1 / Math.sqrt(shape[1]!);
      for (let k = 0; k < n; k++) w[k] = (2 * next() - 1) * bound;
    } else if (shape.length === 1)
      w.fill(1); // norm gains
    else
      for (let k = 0; k < n; k++) w[k] = 0.02 * Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
    weights.set(name, w);
  }
  return weights;
}

/** Feeds for the weights, validating names and sizes. */
export function weightFeeds(config: LlamaConfig, weights: Weights): Feeds {
  const feeds: Feeds = {};
  for (const [name, shape] of parameterShapes(config)) {
    const w = weights.get(name);
    const n = shape.reduce((a, b) => a * b, 1);
    if (!w) throw new Error(`weights: missing ${name}`);
    if (w.length !== n)
      throw new Error(`weights: ${name} has ${w.length} values, expected ${n} for shape [${shape.join(', ')}]`);
    feeds[name] = { data: w, dims: shape };
  }
  return feeds;
}
