// A small ONNX graph builder. Every value carries a dtype and a (partly symbolic) shape so that
// gradient rules can undo broadcasting statically; the emitted model is opset 18 and its bytes are a
// pure function of the build calls (names come from counters, no timestamps), so the bytes hash can key
// the session cache.
import { onnx } from 'onnx-proto';
import { broadcastShapes, dimDivide, dimEq, dimProduct, dimSum, normAxis } from './dims';
import { encodeGraph } from './onnx-encode';

export { broadcastShapes, dimEq, dimProduct } from './dims';

export type DType = 'float32' | 'float64' | 'int64' | 'bool';
export type FloatType = 'float32' | 'float64';
/** A dimension: a number, or a symbolic product such as "T", "8*T" or "P+T" (atoms joined by '*'). */
export type Dim = number | string;

export interface Value {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly Dim[];
}

export type Attr =
  | { type: 'float'; value: number }
  | { type: 'int'; value: number }
  | { type: 'ints'; value: number[] }
  | { type: 'floats'; value: number[] }
  | { type: 'string'; value: string }
  | { type: 'tensor'; value: onnx.ITensorProto };

export interface GraphNode {
  readonly op: string;
  readonly domain?: string;
  readonly inputs: readonly Value[];
  readonly outputs: readonly Value[];
  readonly attrs: Readonly<Record<string, Attr>>;
}

export const OPSET = 18;

export const dataType: Record<DType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float64: onnx.TensorProto.DataType.DOUBLE,
  int64: onnx.TensorProto.DataType.INT64,
  bool: onnx.TensorProto.DataType.BOOL,
};

export const f = (value: number): Attr => ({ type: 'float', value });
export const i = (value: number): Attr => ({ type: 'int', value });
export const ints = (value: number[]): Attr => ({ type: 'ints', value });
export const str = (value: string): Attr => ({ type: 'string', value });

/** Op types whose outputs carry no gradient (comparisons, index plumbing). */
export const NON_DIFFERENTIABLE = new Set([
  'Equal',
  'Less',
  'LessOrEqual',
  'Greater',
  'GreaterOrEqual',
  'And',
  'Not',
  'Shape',
  'ConstantOfShape',
]);

export class Graph {
  readonly nodes: GraphNode[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers: { value: Value; data: Float32Array | Float64Array | BigInt64Array | Uint8Array }[] = [];
  private counter = 0;
  private readonly constCache = new Map<string, Value>();

  constructor(readonly floatType: FloatType = 'float32') {}

  private fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, dtype: DType, shape: Dim[]): Value {
    const v: Value = { name, dtype, shape };
    this.inputs.push(v);
    return v;
  }

  /** Marks v as a graph output under `name` (an Identity gives it that name). */
  output(v: Value, name: string): Value {
    // Renaming the producing node's output avoids an Identity copy (weights and moments are big).
    const produced = this.nodes.some((n) => n.outputs.includes(v));
    if (produced && !this.outputs.includes(v)) {
      (v as { name: string }).name = name;
      this.outputs.push(v);
      return v;
    }
    const out = this.emit('Identity', [v], {}, [{ dtype: v.dtype, shape: v.shape }], name)[0]!;
    this.outputs.push(out);
    return out;
  }

  /** A float constant of the graph's float type (scalars are shared). */
  scalar(x: number): Value {
    return this.constant([x], this.floatType, []);
  }

  constant(values: ArrayLike<number>, dtype: DType, shape: number[]): Value {
    const key = `${dtype}|${shape.join(',')}|${Array.from(values).join(',')}`;
    const hit = values.length <= 64 ? this.constCache.get(key) : undefined;
    if (hit) return hit;
    const v: Value = { name: this.fresh('const'), dtype, shape };
    const data =
      dtype === 'float32'
        ? Float32Array.from(values)
        : dtype === 'float64'
          ? Float64Array.from(values)
          : dtype === 'int64'
            ? BigInt64Array.from(Array.from(values, (x) => BigInt(x)))
            : Uint8Array.from(values);
    this.initializers.push({ value: v, data });
    if (values.length <= 64) this.constCache.set(key, v);
    return v;
  }

  ints(values: number[]): Value {
    return this.constant(values, 'int64', [values.length]);
  }

  /** Appends a node with explicitly given output types; the op helpers below infer them. */
  emit(
    op: string,
    inputs: Value[],
    attrs: Record<string, Attr>,
    outs: { dtype: DType; shape: readonly Dim[] }[],
    name?: string,
    domain?: string,
  ): Value[] {
    const outputs = outs.map((o, k) => ({
      name: name && outs.length === 1 ? name : this.fresh(`${op.toLowerCase()}${k ? `_${k}` : ''}`),
      dtype: o.dtype,
      shape: [...o.shape],
    }));
    this.nodes.push(domain ? { op, domain, inputs, outputs, attrs } : { op, inputs, outputs, attrs });
    return outputs;
  }

  private one(op: string, inputs: Value[], attrs: Record<string, Attr>, dtype: DType, shape: readonly Dim[]): Value {
    return this.emit(op, inputs, attrs, [{ dtype, shape }])[0]!;
  }

  // ---- elementwise ----
  private binary(op: string, a: Value, b: Value, dtype?: DType): Value {
    return this.one(op, [a, b], {}, dtype ?? a.dtype, broadcastShapes(a.shape, b.shape));
  }
  add(a: Value, b: Value) {
    return this.binary('Add', a, b);
  }
  sub(a: Value, b: Value) {
    return this.binary('Sub', a, b);
  }
  mul(a: Value, b: Value) {
    return this.binary('Mul', a, b);
  }
  div(a: Value, b: Value) {
    return this.binary('Div', a, b);
  }
  max(a: Value, b: Value) {
    return this.binary('Max', a, b);
  }
  min(a: Value, b: Value) {
    return this.binary('Min', a, b);
  }
  pow(a: Value, b: Value) {
    return this.binary('Pow', a, b);
  }
  less(a: Value, b: Value) {
    return this.binary('Less', a, b, 'bool');
  }
  lessOrEqual(a: Value, b: Value) {
    return this.binary('LessOrEqual', a, b, 'bool');
  }
  greater(a: Value, b: Value) {
    return this.binary('Greater', a, b, 'bool');
  }
  greaterOrEqual(a: Value, b: Value) {
    return this.binary('GreaterOrEqual', a, b, 'bool');
  }
  equal(a: Value, b: Value) {
    return this.binary('Equal', a, b, 'bool');
  }
  and(a: Value, b: Value) {
    return this.binary('And', a, b, 'bool');
  }
  private unary(op: string, x: Value) {
    return this.one(op, [x], {}, x.dtype, x.shape);
  }
  neg(x: Value) {
    return this.unary('Neg', x);
  }
  exp(x: Value) {
    return this.unary('Exp', x);
  }
  log(x: Value) {
    return this.unary('Log', x);
  }
  sqrt(x: Value) {
    return this.unary('Sqrt', x);
  }
  reciprocal(x: Value) {
    return this.unary('Reciprocal', x);
  }
  sigmoid(x: Value) {
    return this.unary('Sigmoid', x);
  }
  identity(x: Value) {
    return this.unary('Identity', x);
  }
  not(x: Value) {
    return this.unary('Not', x);
  }
  cast(x: Value, to: DType) {
    return this.one('Cast', [x], { to: i(dataType[to]) }, to, x.shape);
  }
  where(c: Value, a: Value, b: Value) {
    return this.one('Where', [c, a, b], {}, a.dtype, broadcastShapes(c.shape, broadcastShapes(a.shape, b.shape)));
  }
  clip(x: Value, lo: Value, hi: Value) {
    return this.one('Clip', [x, lo, hi], {}, x.dtype, x.shape);
  }

  // ---- reductions / normalisations ----
  reduce(op: 'ReduceSum' | 'ReduceMean' | 'ReduceMax', x: Value, axes: number[], keepdims: boolean): Value {
    const r = x.shape.length;
    const ax = axes.map((a) => normAxis(a, r));
    const shape = keepdims
      ? x.shape.map((d, k) => (ax.includes(k) ? 1 : d))
      : x.shape.filter((_, k) => !ax.includes(k));
    return this.one(op, [x, this.ints(ax)], { keepdims: i(keepdims ? 1 : 0) }, x.dtype, shape);
  }
  reduceSum(x: Value, axes: number[], keepdims = true) {
    return this.reduce('ReduceSum', x, axes, keepdims);
  }
  reduceMean(x: Value, axes: number[], keepdims = true) {
    return this.reduce('ReduceMean', x, axes, keepdims);
  }
  softmax(x: Value, axis = -1) {
    return this.one('Softmax', [x], { axis: i(axis) }, x.dtype, x.shape);
  }
  logSoftmax(x: Value, axis = -1) {
    return this.one('LogSoftmax', [x], { axis: i(axis) }, x.dtype, x.shape);
  }

  // ---- linear algebra ----
  matmul(a: Value, b: Value): Value {
    if (a.shape.length < 2 || b.shape.length < 2) throw new Error('matmul: operands must have rank >= 2');
    const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
    return this.one('MatMul', [a, b], {}, a.dtype, [
      ...batch,
      a.shape[a.shape.length - 2]!,
      b.shape[b.shape.length - 1]!,
    ]);
  }
  /**
   * op(A)·op(B) where op transposes the last two axes. float32 graphs use ORT's FusedMatMul so the
   * transpose is folded into the GEMM packing instead of materialised; float64 has no such kernel.
   */
  matmulT(a: Value, b: Value, opts: { transA?: boolean; transB?: boolean }): Value {
    const swap = (x: Value) => g2(x.shape);
    const g2 = (s: readonly Dim[]) => [...s.slice(0, -2), s[s.length - 1]!, s[s.length - 2]!];
    if (this.floatType !== 'float32' || a.dtype !== 'float32') {
      const perm = (x: Value) => [...x.shape.slice(0, -2).map((_, k) => k), x.shape.length - 1, x.shape.length - 2];
      return this.matmul(opts.transA ? this.transpose(a, perm(a)) : a, opts.transB ? this.transpose(b, perm(b)) : b);
    }
    const as = opts.transA ? swap(a) : a.shape;
    const bs = opts.transB ? swap(b) : b.shape;
    const batch = broadcastShapes(as.slice(0, -2), bs.slice(0, -2));
    const attrs = { transA: i(opts.transA ? 1 : 0), transB: i(opts.transB ? 1 : 0), alpha: f(1) };
    return this.emit(
      'FusedMatMul',
      [a, b],
      attrs,
      [{ dtype: a.dtype, shape: [...batch, as[as.length - 2]!, bs[bs.length - 1]!] }],
      undefined,
      'com.microsoft',
    )[0]!;
  }
  /** 2-D Y = alpha · op(A) · op(B); no C input (the gradient rule relies on that). */
  gemm(a: Value, b: Value, opts: { transA?: boolean; transB?: boolean; alpha?: number } = {}): Value {
    const [a0, a1] = a.shape as [Dim, Dim];
    const [b0, b1] = b.shape as [Dim, Dim];
    const attrs: Record<string, Attr> = {
      transA: i(opts.transA ? 1 : 0),
      transB: i(opts.transB ? 1 : 0),
      alpha: f(opts.alpha ?? 1),
    };
    return this.one('Gemm', [a, b], attrs, a.dtype, [opts.transA ? a1 : a0, opts.transB ? b0 : b1]);
  }

  // ---- shape plumbing ----
  /** Reshape to `dims`; each dim is a number, a symbol equal to the input's dim at that index (emitted as 0), or -1. */
  reshape(x: Value, dims: Dim[]): Value {
    const spec: number[] = [];
    const known: Dim[] = [];
    let inferAt = -1;
    dims.forEach((d, k) => {
      if (d === -1) {
        if (inferAt >= 0) throw new Error('reshape: more than one -1');
        inferAt = k;
        spec.push(-1);
      } else if (typeof d === 'number') {
        spec.push(d);
        known.push(d);
      } else {
        const src = x.shape[k];
        if (src === undefined || !dimEq(src, d))
          throw new Error(`reshape: symbolic dim ${d} at ${k} must equal the input's (${String(src)}); use -1`);
        spec.push(0);
        known.push(d);
      }
    });
    const shape = [...dims];
    if (inferAt >= 0) shape[inferAt] = dimDivide(dimProduct(x.shape), dimProduct(known));
    return this.one('Reshape', [x, this.ints(spec)], {}, x.dtype, shape);
  }
  transpose(x: Value, perm: number[]): Value {
    return this.one(
      'Transpose',
      [x],
      { perm: ints(perm) },
      x.dtype,
      perm.map((p) => x.shape[p]!),
    );
  }
  unsqueeze(x: Value, axes: number[]): Value {
    const shape: Dim[] = [...x.shape];
    const r = x.shape.length + axes.length;
    for (const a of axes.map((a) => normAxis(a, r)).sort((p, q) => p - q)) shape.splice(a, 0, 1);
    return this.one('Unsqueeze', [x, this.ints(axes)], {}, x.dtype, shape);
  }
  squeeze(x: Value, axes: number[]): Value {
    const ax = axes.map((a) => normAxis(a, x.shape.length));
    return this.one(
      'Squeeze',
      [x, this.ints(axes)],
      {},
      x.dtype,
      x.shape.filter((_, k) => !ax.includes(k)),
    );
  }
  concat(xs: Value[], axis: number): Value {
    const first = xs[0]!;
    const ax = normAxis(axis, first.shape.length);
    const shape = [...first.shape];
    shape[ax] = xs.slice(1).reduce<Dim>((s, x) => dimSum(s, x.shape[ax]!), first.shape[ax]!);
    return this.one('Concat', xs, { axis: i(ax) }, first.dtype, shape);
  }
  split(x: Value, sizes: number[], axis: number): Value[] {
    const ax = normAxis(axis, x.shape.length);
    const outs = sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((d, k) => (k === ax ? s : d)) }));
    return this.emit('Split', [x, this.ints(sizes)], { axis: i(ax) }, outs);
  }
  /** Gather along axis 0 (embedding lookup). */
  gather(data: Value, indices: Value): Value {
    return this.one('Gather', [data, indices], { axis: i(0) }, data.dtype, [...indices.shape, ...data.shape.slice(1)]);
  }
  /** GatherND; with batchDims = 1 each batch row indexes its own slice (no gradient rule: inference only). */
  gatherND(data: Value, indices: Value, batchDims: number): Value {
    const depth = indices.shape[indices.shape.length - 1] as number;
    const shape = [...indices.shape.slice(0, -1), ...data.shape.slice(batchDims + depth)];
    return this.one('GatherND', [data, indices], { batch_dims: i(batchDims) }, data.dtype, shape);
  }
  gatherElements(data: Value, indices: Value, axis: number): Value {
    return this.one(
      'GatherElements',
      [data, indices],
      { axis: i(normAxis(axis, data.shape.length)) },
      data.dtype,
      indices.shape,
    );
  }
  scatterElements(data: Value, indices: Value, updates: Value, axis: number): Value {
    return this.one(
      'ScatterElements',
      [data, indices, updates],
      { axis: i(normAxis(axis, data.shape.length)) },
      data.dtype,
      data.shape,
    );
  }
  shapeOf(x: Value): Value {
    return this.one('Shape', [x], {}, 'int64', [x.shape.length]);
  }
  /** Zeros with x's runtime shape (used by gradient rules that scatter into a fresh buffer). */
  zerosLike(x: Value): Value {
    const t: onnx.ITensorProto = {
      dataType: dataType[x.dtype],
      dims: [1],
      rawData: new Uint8Array(x.dtype === 'float64' ? 8 : 4),
    };
    return this.emit('ConstantOfShape', [this.shapeOf(x)], { value: { type: 'tensor', value: t } }, [
      { dtype: x.dtype, shape: x.shape },
    ])[0]!;
  }

  /** The ONNX model bytes (onnx-encode.ts): deterministic, so their hash keys the session cache. */
  toBytes(): Uint8Array {
    return encodeGraph(this);
  }
}
