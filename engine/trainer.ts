// Training steps as single ONNX graphs: Llama forward → an objective's loss → backward (engine/autodiff)
// → global grad-norm clip → AdamW. Weights, moments and the step counter are graph inputs and outputs, and
// the learning rate is an input, so a schedule never rebuilds the graph. The engine knows no RL: an
// `Objective` (SFT cross-entropy here, the GRPO policy loss in opera/grpo-graph.ts) says what to minimise.
import type { LlamaConfig } from './config';
import { gradients } from './autodiff';
import { type FloatType, Graph, type Value } from './graph';
import { buildLlama, forwardInputs, parameterInputs, rotaryTables, targetLogps, trainableShapes } from './llama';
import { causalBias, type LlamaModel, type Weights, weightFeeds } from './model';
import type { Feeds } from './ort';
import { inPhase } from '../util/phase';

export interface OptimizerState {
  step: number;
  m: Weights;
  v: Weights;
}
export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  maxGradNorm?: number;
}

/** torch.optim.AdamW defaults plus verl's grad clip of 1.0; weight decay applies to matrices only. */
export const adamwDefaults: Required<AdamWOptions> = {
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
  maxGradNorm: 1.0,
};

/** What a training step minimises, built on the per-token log-probs of the targets. */
export interface Objective {
  /** Names the graph: objectives with equal keys build equal graphs (it keys the session cache). */
  key: string;
  /**
   * Adds the loss (a scalar) and named scalar metrics to `g`. `logp` is [B, T]: log p of the token at
   * t + 1 given the tokens up to t; the objective declares its own inputs (weights, advantages, …).
   */
  build(g: Graph, logp: Value): { loss: Value; metrics: Record<string, Value> };
}

/** One step's data: token rows (right-padded by the trainer) and the objective's own inputs, each [B, T]-aligned. */
export interface TrainBatch {
  rows: number[][];
  feeds: Feeds;
}

export interface StepResult {
  loss: number;
  gradNorm: number;
  /** The objective's named metrics. */
  metrics: Record<string, number>;
}

/** T of a batch: every row predicts its tokens after the first, right-padded to the longest. */
export const paddedLength = (rows: number[][]): number => Math.max(1, ...rows.map((r) => r.length - 1));

/** The next-token cross-entropy at the weighted positions: loss = −Σ weight·logp (weights from `sftBatch`). */
export const sftObjective: Objective = {
  key: 'sft',
  build(g, logp) {
    const weight = g.input('weight', g.floatType, [...logp.shape]); // 0 on padding and prompt
    return { loss: g.neg(g.reduceSum(g.mul(weight, logp), [0, 1], false)), metrics: {} };
  },
};

/** SFT weights at the positions that predict masked-in tokens, normalised to a token mean. */
export function sftBatch(
  batch: { tokens: number[]; lossMask: number[] }[],
  floatType: FloatType = 'float32',
): TrainBatch & { tokens: number } {
  const rows = batch.map((r) => r.tokens);
  const B = rows.length;
  const T = paddedLength(rows);
  const weight = floatType === 'float64' ? new Float64Array(B * T) : new Float32Array(B * T);
  let count = 0;
  batch.forEach((r, b) => {
    if (r.lossMask.length !== r.tokens.length)
      throw new Error(`sftStep: row ${b} has ${r.tokens.length} tokens but ${r.lossMask.length} mask values`);
    for (let t = 1; t < r.tokens.length; t++) {
      if (r.lossMask[t]) {
        weight[b * T + t - 1] = 1;
        count++;
      }
    }
  });
  if (count === 0) throw new Error('sftStep: the loss mask selects no tokens');
  for (let k = 0; k < weight.length; k++) weight[k] = weight[k]! / count;
  return { rows, feeds: { weight: { data: weight, dims: [B, T] } }, tokens: count };
}

/** Forward + objective for B rows; returns the trainable parameters, the loss and the objective's metrics. */
function buildLoss(g: Graph, config: LlamaConfig, B: number, objective: Objective) {
  const all = parameterInputs(g, config);
  const inp = forwardInputs(g, config, B, false);
  const targets = g.input('targets', 'int64', [B, 'T']);
  const logp = targetLogps(g, buildLlama(g, config, all, inp).logits, targets); // [B, T]
  const trainable = trainableShapes(config);
  const params = new Map([...all].filter(([name]) => trainable.has(name)));
  return { params, ...objective.build(g, logp) };
}

/** Appends global-norm clipping and AdamW; outputs `new:<name>`, `m:<name>`, `v:<name>`, `step`, `gradNorm`. */
function appendAdamW(g: Graph, params: Map<string, Value>, grads: Value[], o: Required<AdamWOptions>): void {
  const ft = g.floatType;
  const c = (x: number) => g.scalar(x);
  const step = g.input('step', ft, []);
  const lr = g.input('lr', ft, []);
  const entries = [...params.entries()];
  const sq = grads.map((gr) =>
    g.reduceSum(
      g.mul(gr, gr),
      gr.shape.map((_, k) => k),
      false,
    ),
  ); // [] each
  const norm = g.sqrt(g.emit('Sum', sq, {}, [{ dtype: ft, shape: [] }])[0]!); // []
  g.output(norm, 'gradNorm');
  // torch.nn.utils.clip_grad_norm_: scale = min(1, max_norm / (norm + 1e-6)); folded into the moment coefficients.
  const scale =
    Number.isFinite(o.maxGradNorm) && o.maxGradNorm > 0
      ? g.min(c(1), g.div(c(o.maxGradNorm), g.add(norm, c(1e-6))))
      : c(1);
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

export function buildTrainGraph(
  config: LlamaConfig,
  B: number,
  objective: Objective,
  adamw: Required<AdamWOptions>,
  floatType: FloatType = 'float32',
): Graph {
  const g = new Graph(floatType);
  const { params, loss, metrics } = buildLoss(g, config, B, objective);
  const grads = gradients(g, loss, [...params.values()]);
  g.output(loss, 'loss');
  for (const [name, v] of Object.entries(metrics)) g.output(v, name);
  appendAdamW(g, params, grads, adamw);
  return g;
}

/** Loss and its parameter gradients (outputs `loss`, metrics and `grad:<name>`): for checks and tools. */
export function buildGradGraph(
  config: LlamaConfig,
  B: number,
  objective: Objective,
  floatType: FloatType = 'float32',
): Graph {
  const g = new Graph(floatType);
  const { params, loss, metrics } = buildLoss(g, config, B, objective);
  const grads = gradients(g, loss, [...params.values()]);
  g.output(loss, 'loss');
  for (const [name, v] of Object.entries(metrics)) g.output(v, name);
  [...params.keys()].forEach((name, k) => g.output(grads[k]!, `grad:${name}`));
  return g;
}

/** Right-padded forward inputs of a batch: inputs predict targets (tokens shifted by one). */
export function batchFeeds(config: LlamaConfig, rows: number[][], floatType: FloatType = 'float32') {
  const B = rows.length;
  const T = paddedLength(rows);
  const tokens = new BigInt64Array(B * T);
  const targets = new BigInt64Array(B * T);
  rows.forEach((r, b) => {
    for (let t = 0; t + 1 < r.length; t++) {
      tokens[b * T + t] = BigInt(r[t]!);
      targets[b * T + t] = BigInt(r[t + 1]!);
    }
  });
  const rot = rotaryTables(
    config,
    rows.map(() => Array.from({ length: T }, (_, k) => k)),
    T,
    floatType,
  );
  const bias32 = causalBias(
    rows.map((r) => Math.max(1, r.length - 1)),
    T,
  );
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

/** A step whose loss or gradient norm is not finite: the weights it would write are garbage. */
export class NonFiniteLossError extends Error {
  override name = 'NonFiniteLossError';
  constructor(
    readonly step: number,
    readonly result: StepResult,
  ) {
    super(`loss ${result.loss}, grad norm ${result.gradNorm} at step ${step}`);
  }
}

/** A run of steps `start..steps-1`: which batch and learning rate each gets, and what to do after each. */
export interface TrainLoop {
  objective: Objective;
  steps: number;
  /** First step to run (a resumed loop starts after the steps a partial checkpoint holds). */
  start?: number;
  batch(step: number): TrainBatch;
  /** `optimizerStep` counts every step this optimizer state has taken (across loops): warm-up schedules use it. */
  lr(step: number, optimizerStep: number): number;
  /** After each step (heartbeats, metrics, partial checkpoints); `step` is the index of the step just run. */
  onStep?(step: number, result: StepResult): Promise<void> | void;
}

export class Trainer {
  private readonly opts: Required<AdamWOptions>;
  private st: OptimizerState;

  constructor(
    private readonly model: LlamaModel,
    options: AdamWOptions = {},
    state?: OptimizerState,
  ) {
    this.opts = { ...adamwDefaults, ...options };
    const shapes = trainableShapes(model.config);
    const trainable = new Map([...model.weights].filter(([name]) => shapes.has(name)));
    this.st = state ?? { step: 0, m: zerosLike(trainable), v: zerosLike(trainable) };
    for (const [name, shape] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (const [which, moments] of [
        ['m', this.st.m],
        ['v', this.st.v],
      ] as const) {
        const x = moments.get(name);
        if (!x || x.length !== n)
          throw new Error(
            `optimizer state: ${which} for ${name} is ${x ? `${x.length} values` : 'missing'}, expected ${n}`,
          );
      }
    }
  }

  state(): OptimizerState {
    return this.st;
  }

  /** One optimizer step on `batch` minimising `objective`; updates the model's weights and the moments. */
  async step(objective: Objective, batch: TrainBatch, lr: number): Promise<StepResult> {
    const B = batch.rows.length;
    if (B === 0) throw new Error(`${objective.key} step: empty batch`);
    const key = `train|${objective.key}|${B}|${JSON.stringify(this.opts)}`;
    const session = await this.model.session(key, () => buildTrainGraph(this.model.config, B, objective, this.opts));
    const all: Feeds = {
      ...batchFeeds(this.model.config, batch.rows).feeds,
      ...batch.feeds,
      ...weightFeeds(this.model.config, this.model.weights),
    };
    const trainable = trainableShapes(this.model.config);
    for (const [name, shape] of trainable) {
      all[`m:${name}`] = { data: this.st.m.get(name)!, dims: shape };
      all[`v:${name}`] = { data: this.st.v.get(name)!, dims: shape };
    }
    all.step = { data: Float32Array.of(this.st.step), dims: [] };
    all.lr = { data: Float32Array.of(lr), dims: [] };
    const out = await session.run(all);
    const weights: Weights = new Map(this.model.weights); // frozen ones stay as they are
    const m: Weights = new Map();
    const v: Weights = new Map();
    for (const name of trainable.keys()) {
      weights.set(name, out[`new:${name}`]!.data as Float32Array);
      m.set(name, out[`m:new:${name}`]!.data as Float32Array);
      v.set(name, out[`v:new:${name}`]!.data as Float32Array);
    }
    this.model.setWeights(weights);
    this.st = { step: this.st.step + 1, m, v };
    const scalar = (n: string) => Number(out[n]?.data[0] ?? NaN);
    const metrics = Object.fromEntries(
      Object.keys(out)
        .filter((n) => !n.includes(':') && !['loss', 'gradNorm', 'nextStep'].includes(n))
        .map((n) => [n, scalar(n)]),
    );
    return { loss: scalar('loss'), gradNorm: scalar('gradNorm'), metrics };
  }

  /**
   * Runs a loop of steps. A step with a non-finite loss or gradient norm throws `NonFiniteLossError`
   * before `onStep` sees it, so nothing saves or reports weights it wrote.
   */
  async train(loop: TrainLoop): Promise<void> {
    for (let step = loop.start ?? 0; step < loop.steps; step++) {
      // Timed as compute; `onStep` (saving, reporting) is not.
      const result = await inPhase('compute', () =>
        this.step(loop.objective, loop.batch(step), loop.lr(step, this.st.step)),
      );
      if (!Number.isFinite(result.loss) || !Number.isFinite(result.gradNorm))
        throw new NonFiniteLossError(step, result);
      await loop.onStep?.(step, result);
    }
  }

  /** One SFT step (next-token cross-entropy on the masked-in tokens). */
  async sftStep(
    batch: { tokens: number[]; lossMask: number[] }[],
    lr: number,
  ): Promise<StepResult & { tokens: number }> {
    if (batch.length === 0) throw new Error('sftStep: empty batch');
    const b = sftBatch(batch);
    return { ...(await this.step(sftObjective, b, lr)), tokens: b.tokens };
  }
}
