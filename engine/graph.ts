// A small ONNX graph builder. Every value carries a dtype and a (partly symbolic) shape so that
// gradient rules can undo broadcasting statically; the emitted model is opset 18 and its bytes are a
// pure function of the build calls (names come from counters, no timestamps), so the bytes hash can key
// the session cache.
import { onnx } from 'onnx-proto';

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

const dataType: Record<DType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float64: onnx.TensorProto.DataType.DOUBLE,
  int64: onnx.TensorProto.DataType.INT64,
  bool: onnx.TensorProto.DataType.BOOL,
};

// ---- symbolic dimension algebra (monomials: coefficient × atoms) ----
function parseDim(d: Dim): { coef: number; atoms: string[] } {
  if (typeof d === 'number') return { coef: d, atoms: [] };
  if (d.includes('+')) return { coef: 1, atoms: [d] }; // a sum is an opaque atom
  let coef = 1;
  const atoms: string[] = [];
  for (const part of d.split('*')) {
    if (/^\d+$/.test(part)) coef *= Number(part);
    else atoms.push(part);
  }
  return { coef, atoms: atoms.sort() };
}
function formatDim(coef: number, atoms: string[]): Dim {
  if (atoms.length === 0) return coef;
  const sorted = [...atoms].sort();
  return coef === 1 ? sorted.join('*') : `${coef}*${sorted.join('*')}`;
}
export function dimProduct(dims: readonly Dim[]): Dim {
  let coef = 1;
  const atoms: string[] = [];
  for (const d of dims) {
    const p = parseDim(d);
    coef *= p.coef;
    atoms.push(...p.atoms);
  }
  return formatDim(coef, atoms);
}
function dimDivide(a: Dim, b: Dim): Dim {
  const pa = parseDim(a);
  const pb = parseDim(b);
  const atoms = [...pa.atoms];
  for (const x of pb.atoms) {
    const i = atoms.indexOf(x);
    if (i < 0) throw new Error(`cannot divide dim ${a} by ${b}`);
    atoms.splice(i, 1);
  }
  if (pa.coef % pb.coef !== 0) throw new Error(`cannot divide dim ${a} by ${b}`);
  return formatDim(pa.coef / pb.coef, atoms);
}
export function dimEq(a: Dim, b: Dim): boolean {
  return (
    String(formatDim(parseDim(a).coef, parseDim(a).atoms)) === String(formatDim(parseDim(b).coef, parseDim(b).atoms))
  );
}
function dimSum(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (a === 0) return b;
  if (b === 0) return a;
  return `(${a}+${b})`;
}

export function broadcastShapes(a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    out.push(da === 1 ? db : da);
  }
  return out;
}

const normAxis = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);

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

  // ---- serialisation ----
  toBytes(): Uint8Array {
    const valueInfo = (v: Value): onnx.IValueInfoProto => ({
      name: v.name,
      type: {
        tensorType: {
          elemType: dataType[v.dtype],
          shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: String(d) })) },
        },
      },
    });
    const attr = (name: string, a: Attr): onnx.IAttributeProto => {
      const t = onnx.AttributeProto.AttributeType;
      switch (a.type) {
        case 'float':
          return { name, type: t.FLOAT, f: a.value };
        case 'int':
          return { name, type: t.INT, i: a.value };
        case 'ints':
          return { name, type: t.INTS, ints: a.value };
        case 'floats':
          return { name, type: t.FLOATS, floats: a.value };
        case 'string':
          return { name, type: t.STRING, s: new TextEncoder().encode(a.value) };
        case 'tensor':
          return { name, type: t.TENSOR, t: a.value };
      }
    };
    const model: onnx.IModelProto = {
      irVersion: 8,
      producerName: 'operaflow',
      opsetImport: this.nodes.some((n) => n.domain === 'com.microsoft')
        ? [
            { domain: '', version: OPSET },
            { domain: 'com.microsoft', version: 1 },
          ]
        : [{ domain: '', version: OPSET }],
      graph: {
        name: 'operaflow',
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
        initializer: this.initializers.map(({ value, data }) => ({
          name: value.name,
          dataType: dataType[value.dtype],
          dims: value.shape.map(Number),
          rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
        })),
        node: this.nodes.map((n, k) => ({
          name: `n${k}`,
          opType: n.op,
          ...(n.domain ? { domain: n.domain } : {}),
          input: n.inputs.map((v) => v.name),
          output: n.outputs.map((v) => v.name),
          attribute: Object.keys(n.attrs)
            .sort()
            .map((name) => attr(name, n.attrs[name]!)),
        })),
      },
    };
    return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  }
}
