// Training steps as single ONNX graphs: Llama forward → loss → backward (engine/autodiff) → global
// grad-norm clip → AdamW. Weights, moments and the step counter are graph inputs and outputs, and the
// learning rate is an input, so a schedule never rebuilds the graph.
import type { LlamaConfig } from './config';
import { gradients } from './autodiff';
import { type FloatType, Graph, type Value } from './graph';
import { buildLlama, forwardInputs, parameterInputs, parameterShapes, rotaryTables, targetLogps } from './llama';
import { causalBias, type LlamaModel, type Weights, weightFeeds } from './model';
import type { Feeds } from './ort';

export interface OptimizerState { step: number; m: Weights; v: Weights }
export interface AdamWOptions { beta1?: number; beta2?: number; eps?: number; weightDecay?: number; maxGradNorm?: number }
export interface PolicyLossOptions { clip?: number; clipLow?: number; clipHigh?: number; dualClip?: number; klCoef?: number; aggregation?: 'token-mean' | 'seq-mean-token-mean' }

/** torch.optim.AdamW defaults plus verl's grad clip of 1.0; weight decay applies to matrices only. */
export const adamwDefaults: Required<AdamWOptions> = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1.0 };
export const policyLossDefaults = { clip: 0.2, dualClip: 3, klCoef: 0.001, aggregation: 'token-mean' as const };

export type LossKind = 'sft' | 'grpo';
type ResolvedLoss = { clipLow: number; clipHigh: number; dualClip: number; klCoef: number };

export function resolveLoss(o: PolicyLossOptions = {}): ResolvedLoss & { aggregation: 'token-mean' | 'seq-mean-token-mean' } {
  const clip = o.clip ?? policyLossDefaults.clip;
  return { clipLow: o.clipLow ?? clip, clipHigh: o.clipHigh ?? clip, dualClip: o.dualClip ?? policyLossDefaults.dualClip, klCoef: o.klCoef ?? policyLossDefaults.klCoef, aggregation: o.aggregation ?? policyLossDefaults.aggregation };
}

/**
 * Forward + loss for B rows. SFT: loss = −Σ weight·logp. GRPO: OPERA.md's per-token clipped loss with
 * dual clip and low_var_kl; `weight` carries the aggregation (token-mean or seq-mean-token-mean), so
 * both aggregations share one graph. Returns the loss and the named scalar metrics.
 */
export function buildLoss(g: Graph, config: LlamaConfig, B: number, kind: LossKind, lossOpts: ResolvedLoss) {
  const ft = g.floatType;
  const params = parameterInputs(g, config);
  const inp = forwardInputs(g, config, B, false);
  const targets = g.input('targets', 'int64', [B, 'T']);
  const weight = g.input('weight', ft, [B, 'T']); // aggregation weights, 0 on padding/prompt
  const logp = targetLogps(g, buildLlama(g, config, params, inp).logits, targets); // [B, T]
  const total = (x: Value) => g.reduceSum(x, [0, 1], false); // []
  const metrics: Record<string, Value> = {};
  let loss: Value;
  if (kind === 'sft') {
    loss = g.neg(total(g.mul(weight, logp)));
  } else {
    const oldLogp = g.input('oldLogp', ft, [B, 'T']);
    const refLogp = g.input('refLogp', ft, [B, 'T']);
    const adv = g.input('advantage', ft, [B, 1]);
    const clipWeight = g.input('clipWeight', ft, [B, 'T']); // token-mean weights for clipFraction
    const c = (x: number) => g.scalar(x);
    const ratio = g.exp(g.clip(g.sub(logp, oldLogp), c(-20), c(20))); // [B, T]
    const negA = g.neg(adv); // [B, 1]
    const l1 = g.mul(negA, ratio); // [B, T]
    const l2 = g.mul(negA, g.clip(ratio, c(1 - lossOpts.clipLow), c(1 + lossOpts.clipHigh))); // [B, T]
    const c1 = g.max(l1, l2);
    const c2 = g.min(g.mul(negA, c(lossOpts.dualClip)), c1);
    const pg = g.where(g.less(adv, c(0)), c2, c1); // [B, T]
    const k = g.clip(g.sub(refLogp, logp), c(-20), c(20));
    const kl = g.clip(g.sub(g.sub(g.exp(k), k), c(1)), c(-10), c(10)); // [B, T]
    metrics.pgLoss = total(g.mul(weight, pg));
    metrics.klLoss = total(g.mul(weight, kl));
    metrics.clipFraction = total(g.mul(clipWeight, g.cast(g.greater(l2, l1), ft)));
    loss = g.add(metrics.pgLoss, g.mul(metrics.klLoss, c(lossOpts.klCoef)));
  }
  return { params, loss, metrics, logp };
}

/** Appends global-norm clipping and AdamW; outputs `new:<name>`, `m:<name>`, `v:<name>`, `step`, `gradNorm`. */
function appendAdamW(g: Graph, params: Map<string, Value>, grads: Value[], o: Required<AdamWOptions>): void {
  const ft = g.floatType;
  const c = (x: number) => g.scalar(x);
  const step = g.input('step', ft, []);
  const lr = g.input('lr', ft, []);
  const entries = [...params.entries()];
  const sq = grads.map((gr) => g.reduceSum(g.mul(gr, gr), gr.shape.map((_, k) => k), false)); // [] each
  const norm = g.sqrt(g.emit('Sum', sq, {}, [{ dtype: ft, shape: [] }])[0]!); // []
  g.output(norm, 'gradNorm');
  // torch.nn.utils.clip_grad_norm_: scale = min(1, max_norm / (norm + 1e-6)); folded into the moment coefficients.
  const scale = Number.isFinite(o.maxGradNorm) && o.maxGradNorm > 0 ? g.min(c(1), g.div(c(o.maxGradNorm), g.add(norm, c(1e-6)))) : c(1);
  const t = g.add(step, c(1));
  g.output(t, 'nextStep');
  const stepSize = g.div(lr, g.sub(c(1), g.pow(c(o.beta1), t))); // lr / (1 − β1^t)
  const invBc2 = g.reciprocal(g.sub(c(1), g.pow(c(o.beta2), t))); // 1 / (1 − β2^t)
  const gm = g.mul(scale, c(1 - o.beta1));
  const gv = g.mul(g.mul(scale, scale), c(1 - o.beta2));
  const decay = g.sub(c(1), g.mul(lr, c(o.weightDecay)));
  const denomScale = g.div(invBc2, g.mul(stepSize, stepSize)); // (√(v2/bc2) + eps)/stepSize = √(v2·a) + b
  const denomEps = g.div(c(o.eps), stepSize);
  entries.forEach(([name, p], k) => {
    const grad = grads[k]!;
    const m = g.input(`m:${name}`, ft, [...p.shape]);
    const v = g.input(`v:${name}`, ft, [...p.shape]);
    const m2 = g.add(g.mul(m, c(o.beta1)), g.mul(grad, gm));
    const v2 = g.add(g.mul(v, c(o.beta2)), g.mul(g.mul(grad, grad), gv));
    // p − stepSize·m̂/(√v̂ + eps) written as p − m2/(√(v2·a) + b): one pass fewer over every weight.
    const update = g.div(m2, g.add(g.sqrt(g.mul(v2, denomScale)), denomEps));
    const decayed = p.shape.length >= 2 && o.weightDecay > 0 ? g.mul(p, decay) : p;
    g.output(g.sub(decayed, update), `new:${name}`);
    g.output(m2, `m:new:${name}`);
    g.output(v2, `v:new:${name}`);
  });
}

export function buildTrainGraph(config: LlamaConfig, B: number, kind: LossKind, adamw: Required<AdamWOptions>, lossOpts: ResolvedLoss, floatType: FloatType = 'float32'): Graph {
  const g = new Graph(floatType);
  const { params, loss, metrics } = buildLoss(g, config, B, kind, lossOpts);
  const grads = gradients(g, loss, [...params.values()]);
  g.output(loss, 'loss');
  for (const [name, v] of Object.entries(metrics)) g.output(v, name);
  appendAdamW(g, params, grads, adamw);
  return g;
}

/** Loss and its parameter gradients (outputs `loss`, metrics and `grad:<name>`): for checks and tools. */
export function buildGradGraph(config: LlamaConfig, B: number, kind: LossKind, lossOpts: ResolvedLoss = resolveLoss(), floatType: FloatType = 'float32'): Graph {
  const g = new Graph(floatType);
  const { params, loss, metrics } = buildLoss(g, config, B, kind, lossOpts);
  const grads = gradients(g, loss, [...params.values()]);
  g.output(loss, 'loss');
  for (const [name, v] of Object.entries(metrics)) g.output(v, name);
  [...params.keys()].forEach((name, k) => g.output(grads[k]!, `grad:${name}`));
  return g;
}

/** Right-padded batch tensors shared by both steps: inputs predict targets (tokens shifted by one). */
export function batchFeeds(config: LlamaConfig, rows: number[][], floatType: FloatType = 'float32') {
  const B = rows.length;
  const T = Math.max(1, ...rows.map((r) => r.length - 1));
  const tokens = new BigInt64Array(B * T);
  const targets = new BigInt64Array(B * T);
  rows.forEach((r, b) => {
    for (let t = 0; t + 1 < r.length; t++) {
      tokens[b * T + t] = BigInt(r[t]!);
      targets[b * T + t] = BigInt(r[t + 1]!);
    }
  });
  const rot = rotaryTables(config, rows.map(() => Array.from({ length: T }, (_, k) => k)), T, floatType);
  const bias32 = causalBias(rows.map((r) => Math.max(1, r.length - 1)), T);
  const bias = floatType === 'float64' ? Float64Array.from(bias32) : bias32;
  const feeds: Feeds = {
    tokens: { data: tokens, dims: [B, T] },
    targets: { data: targets, dims: [B, T] },
    cos: { data: rot.cos, dims: rot.dims },
    sin: { data: rot.sin, dims: rot.dims },
    bias: { data: bias, dims: [B, T, T] },
  };
  return { feeds, B, T };
}

export function zerosLike(w: Weights): Weights {
  return new Map([...w].map(([k, v]) => [k, new Float32Array(v.length)]));
}

export class Trainer {
  private readonly opts: Required<AdamWOptions>;
  private st: OptimizerState;

  constructor(private readonly model: LlamaModel, options: AdamWOptions = {}, state?: OptimizerState) {
    this.opts = { ...adamwDefaults, ...options };
    this.st = state ?? { step: 0, m: zerosLike(model.weights), v: zerosLike(model.weights) };
    for (const [name, shape] of parameterShapes(model.config)) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (const [which, moments] of [['m', this.st.m], ['v', this.st.v]] as const) {
        const x = moments.get(name);
        if (!x || x.length !== n) throw new Error(`optimizer state: ${which} for ${name} is ${x ? `${x.length} values` : 'missing'}, expected ${n}`);
      }
    }
  }

  state(): OptimizerState {
    return this.st;
  }

  private async run(kind: LossKind, B: number, lossOpts: ResolvedLoss, feeds: Feeds, lr: number) {
    const key = `train|${kind}|${B}|${JSON.stringify(this.opts)}|${JSON.stringify(lossOpts)}`;
    const session = await this.model.session(key, () => buildTrainGraph(this.model.config, B, kind, this.opts, lossOpts));
    const all: Feeds = { ...feeds, ...weightFeeds(this.model.config, this.model.weights) };
    for (const [name, shape] of parameterShapes(this.model.config)) {
      all[`m:${name}`] = { data: this.st.m.get(name)!, dims: shape };
      all[`v:${name}`] = { data: this.st.v.get(name)!, dims: shape };
    }
    all.step = { data: Float32Array.of(this.st.step), dims: [] };
    all.lr = { data: Float32Array.of(lr), dims: [] };
    const out = await session.run(all);
    const weights: Weights = new Map();
    const m: Weights = new Map();
    const v: Weights = new Map();
    for (const name of parameterShapes(this.model.config).keys()) {
      weights.set(name, out[`new:${name}`]!.data as Float32Array);
      m.set(name, out[`m:new:${name}`]!.data as Float32Array);
      v.set(name, out[`v:new:${name}`]!.data as Float32Array);
    }
    this.model.setWeights(weights);
    this.st = { step: this.st.step + 1, m, v };
    const scalar = (n: string) => Number(out[n]?.data[0] ?? NaN);
    return { out, scalar };
  }

  async sftStep(batch: { tokens: number[]; lossMask: number[] }[], lr: number): Promise<{ loss: number; gradNorm: number; tokens: number }> {
    if (batch.length === 0) throw new Error('sftStep: empty batch');
    const { feeds, B, T } = batchFeeds(this.model.config, batch.map((r) => r.tokens));
    const { weight, count } = sftWeights(batch, B, T);
    feeds.weight = { data: weight, dims: [B, T] };
    const { scalar } = await this.run('sft', B, resolveLoss(), feeds, lr);
    return { loss: scalar('loss'), gradNorm: scalar('gradNorm'), tokens: count };
  }

  async grpoStep(
    batch: { tokens: number[]; responseStart: number; advantage: number; oldLogp: number[]; refLogp: number[] }[],
    lr: number,
    loss: PolicyLossOptions = {},
  ): Promise<{ loss: number; pgLoss: number; klLoss: number; clipFraction: number; gradNorm: number }> {
    if (batch.length === 0) throw new Error('grpoStep: empty batch');
    const lossOpts = resolveLoss(loss);
    const { feeds, B } = grpoFeeds(this.model.config, batch, lossOpts.aggregation);
    const { aggregation: _, ...graphLoss } = lossOpts;
    const { scalar } = await this.run('grpo', B, graphLoss, feeds, lr);
    return { loss: scalar('loss'), pgLoss: scalar('pgLoss'), klLoss: scalar('klLoss'), clipFraction: scalar('clipFraction'), gradNorm: scalar('gradNorm') };
  }
}

/** SFT weights at the positions that predict masked-in tokens, normalised to a token mean. */
export function sftWeights(batch: { tokens: number[]; lossMask: number[] }[], B: number, T: number, floatType: FloatType = 'float32') {
  const weight = floatType === 'float64' ? new Float64Array(B * T) : new Float32Array(B * T);
  let count = 0;
  batch.forEach((r, b) => {
    if (r.lossMask.length !== r.tokens.length) throw new Error(`sftStep: row ${b} has ${r.tokens.length} tokens but ${r.lossMask.length} mask values`);
    for (let t = 1; t < r.tokens.length; t++) {
      if (r.lossMask[t]) {
        weight[b * T + t - 1] = 1;
        count++;
      }
    }
  });
  if (count === 0) throw new Error('sftStep: the loss mask selects no tokens');
  for (let k = 0; k < weight.length; k++) weight[k] = weight[k]! / count;
  return { weight, count };
}

/** GRPO feeds: per-token old/ref log-probs at the positions that predict response tokens, and weights. */
export function grpoFeeds(
  config: LlamaConfig,
  batch: { tokens: number[]; responseStart: number; advantage: number; oldLogp: number[]; refLogp: number[] }[],
  aggregation: 'token-mean' | 'seq-mean-token-mean',
  floatType: FloatType = 'float32',
) {
  const { feeds, B, T } = batchFeeds(config, batch.map((r) => r.tokens), floatType);
  const Arr = floatType === 'float64' ? Float64Array : Float32Array;
  const oldLogp = new Arr(B * T);
  const refLogp = new Arr(B * T);
  const weight = new Arr(B * T);
  const clipWeight = new Arr(B * T);
  const advantage = new Arr(B);
  let total = 0;
  let seqs = 0;
  batch.forEach((r, b) => {
    const n = r.tokens.length - r.responseStart;
    if (r.responseStart < 1 || n < 0) throw new Error(`grpoStep: row ${b}: responseStart ${r.responseStart} must be in [1, ${r.tokens.length}]`);
    if (r.oldLogp.length !== n || r.refLogp.length !== n) throw new Error(`grpoStep: row ${b}: oldLogp/refLogp need ${n} values (one per response token), got ${r.oldLogp.length}/${r.refLogp.length}`);
    advantage[b] = r.advantage;
    total += n;
    if (n > 0) seqs++;
    for (let k = 0; k < n; k++) {
      const at = b * T + r.responseStart - 1 + k;
      oldLogp[at] = r.oldLogp[k]!;
      refLogp[at] = r.refLogp[k]!;
    }
  });
  batch.forEach((r, b) => {
    const n = r.tokens.length - r.responseStart;
    for (let k = 0; k < n; k++) {
      const at = b * T + r.responseStart - 1 + k;
      clipWeight[at] = 1 / total;
      weight[at] = aggregation === 'token-mean' ? 1 / total : 1 / (n * seqs);
    }
  });
  feeds.oldLogp = { data: oldLogp, dims: [B, T] };
  feeds.refLogp = { data: refLogp, dims: [B, T] };
  feeds.weight = { data: weight, dims: [B, T] };
  feeds.clipWeight = { data: clipWeight, dims: [B, T] };
  feeds.advantage = { data: advantage, dims: [B, 1] };
  return { feeds, B, T };
}

