// The gradient rules of engine/autodiff.ts, one entry per ONNX op type (tinygrad style): each rule receives
// the node and the gradients of its outputs and returns one entry per node input (undefined = no
// gradient). Rules emit ordinary ONNX ops into the same graph, so forward and backward run as one session.
import type { GradContext, GradRule } from './autodiff';
import { type Dim, type Graph, type GraphNode, type Value, i, str } from './graph';

/** Sums dy over the axes that broadcasting expanded, giving a gradient of shape `target`. */
export function unbroadcast(g: Graph, dy: Value, target: readonly Dim[]): Value {
  const r = dy.shape.length;
  const lead = r - target.length;
  const axes: number[] = [];
  for (let k = 0; k < r; k++) {
    if (k < lead) axes.push(k);
    else if (target[k - lead] === 1 && dy.shape[k] !== 1) axes.push(k);
  }
  if (axes.length === 0) return dy;
  let s = g.reduceSum(dy, axes, true);
  if (lead > 0)
    s = g.squeeze(
      s,
      Array.from({ length: lead }, (_, k) => k),
    );
  return s;
}

const floatOf = (g: Graph, b: Value, like: Value) => g.cast(b, like.dtype);
const expandTo = (g: Graph, dy: Value, x: Value) =>
  g.emit('Expand', [dy, g.shapeOf(x)], {}, [{ dtype: dy.dtype, shape: x.shape }])[0]!;
const reshapeTo = (g: Graph, dy: Value, x: Value) =>
  g.emit('Reshape', [dy, g.shapeOf(x)], {}, [{ dtype: dy.dtype, shape: x.shape }])[0]!;
const intAttr = (n: GraphNode, name: string, dflt: number) => {
  const a = n.attrs[name];
  return a && a.type === 'int' ? a.value : dflt;
};
const noGrad = (ctx: GradContext, k: number, why: string) => {
  if (ctx.needs[k]) throw new Error(`gradient of ${ctx.node.op} input ${k} is not supported (${why})`);
};
/** Axes of a Reduce*, Squeeze or Unsqueeze node, read back from its constant int64 input. */
function constInts(g: Graph, v: Value | undefined): number[] {
  const init = g.initializers.find((x) => x.value === v);
  if (!init || !(init.data instanceof BigInt64Array))
    throw new Error(`expected a constant int64 input, got ${v?.name}`);
  return Array.from(init.data, Number);
}

function reduceSumGrad({
  g,
  node: {
    inputs: [x, axesV],
    attrs,
  },
  dys: [dy],
}: GradContext): (Value | undefined)[] {
  const keep = intAttr({ attrs } as GraphNode, 'keepdims', 1) === 1;
  const d = keep ? dy! : g.unsqueeze(dy!, constInts(g, axesV));
  return [expandTo(g, d, x!), undefined];
}

export const gradRules: Record<string, GradRule> = {
  Identity: ({ dys }) => [dys[0]],
  Add: ({
    g,
    node: {
      inputs: [a, b],
    },
    dys: [dy],
  }) => [unbroadcast(g, dy!, a!.shape), unbroadcast(g, dy!, b!.shape)],
  Sub: ({
    g,
    node: {
      inputs: [a, b],
    },
    dys: [dy],
  }) => [unbroadcast(g, dy!, a!.shape), unbroadcast(g, g.neg(dy!), b!.shape)],
  Mul: ({
    g,
    node: {
      inputs: [a, b],
    },
    dys: [dy],
    needs,
  }) => [
    needs[0] ? unbroadcast(g, g.mul(dy!, b!), a!.shape) : undefined,
    needs[1] ? unbroadcast(g, g.mul(dy!, a!), b!.shape) : undefined,
  ],
  Div: ({
    g,
    node: {
      inputs: [a, b],
      outputs: [y],
    },
    dys: [dy],
    needs,
  }) => [
    needs[0] ? unbroadcast(g, g.div(dy!, b!), a!.shape) : undefined,
    needs[1] ? unbroadcast(g, g.neg(g.div(g.mul(dy!, y!), b!)), b!.shape) : undefined,
  ],
  Neg: ({ g, dys: [dy] }) => [g.neg(dy!)],
  Exp: ({
    g,
    node: {
      outputs: [y],
    },
    dys: [dy],
  }) => [g.mul(dy!, y!)],
  Log: ({
    g,
    node: {
      inputs: [x],
    },
    dys: [dy],
  }) => [g.div(dy!, x!)],
  Sqrt: ({
    g,
    node: {
      outputs: [y],
    },
    dys: [dy],
  }) => [g.div(g.mul(dy!, g.scalar(0.5)), y!)],
  Reciprocal: ({
    g,
    node: {
      outputs: [y],
    },
    dys: [dy],
  }) => [g.neg(g.mul(dy!, g.mul(y!, y!)))],
  Sigmoid: ({
    g,
    node: {
      outputs: [y],
    },
    dys: [dy],
  }) => [g.mul(dy!, g.mul(y!, g.sub(g.scalar(1), y!)))],
  Pow: (ctx) => {
    noGrad(ctx, 1, 'exponent must be constant');
    const {
      g,
      node: {
        inputs: [x, p],
      },
      dys: [dy],
    } = ctx;
    return [unbroadcast(g, g.mul(dy!, g.mul(p!, g.pow(x!, g.sub(p!, g.scalar(1))))), x!.shape), undefined];
  },
  Cast: ({
    g,
    node: {
      inputs: [x],
    },
    dys: [dy],
  }) => [x!.dtype === 'float32' || x!.dtype === 'float64' ? g.cast(dy!, x!.dtype) : undefined],
  Where: ({
    g,
    node: {
      inputs: [c, a, b],
    },
    dys: [dy],
    needs,
  }) => {
    const zero = g.scalar(0);
    return [
      undefined,
      needs[1] ? unbroadcast(g, g.where(c!, dy!, zero), a!.shape) : undefined,
      needs[2] ? unbroadcast(g, g.where(c!, zero, dy!), b!.shape) : undefined,
    ];
  },
  Clip: (ctx) => {
    noGrad(ctx, 1, 'bounds must be constant');
    noGrad(ctx, 2, 'bounds must be constant');
    const {
      g,
      node: {
        inputs: [x, lo, hi],
      },
      dys: [dy],
    } = ctx;
    const inside = g.and(g.greaterOrEqual(x!, lo!), g.lessOrEqual(x!, hi!));
    return [g.mul(dy!, floatOf(g, inside, dy!)), undefined, undefined];
  },
  // Ties send the whole gradient to the first operand.
  Max: ({
    g,
    node: {
      inputs: [a, b],
    },
    dys: [dy],
  }) => {
    const pick = g.greaterOrEqual(a!, b!);
    return [
      unbroadcast(g, g.where(pick, dy!, g.scalar(0)), a!.shape),
      unbroadcast(g, g.where(pick, g.scalar(0), dy!), b!.shape),
    ];
  },
  Min: ({
    g,
    node: {
      inputs: [a, b],
    },
    dys: [dy],
  }) => {
    const pick = g.lessOrEqual(a!, b!);
    return [
      unbroadcast(g, g.where(pick, dy!, g.scalar(0)), a!.shape),
      unbroadcast(g, g.where(pick, g.scalar(0), dy!), b!.shape),
    ];
  },
  ReduceSum: (ctx) => reduceSumGrad(ctx),
  ReduceMean: (ctx) => {
    const {
      g,
      node: {
        inputs: [x, axesV],
        outputs: [y],
      },
    } = ctx;
    const axes = constInts(g, axesV).map((a) => (a < 0 ? a + x!.shape.length : a));
    const counted = axes.map((a) => x!.shape[a]!);
    const size = (v: Value) => g.cast(g.emit('Size', [v], {}, [{ dtype: 'int64', shape: [] }])[0]!, x!.dtype);
    const count = counted.every((d): d is number => typeof d === 'number')
      ? g.scalar(counted.reduce((p, q) => p * q, 1))
      : g.div(size(x!), size(y!));
    return [g.div(reduceSumGrad(ctx)[0]!, count), undefined];
  },
  Softmax: ({
    g,
    node: {
      outputs: [y],
      attrs,
    },
    dys: [dy],
  }) => {
    const axis = (attrs.axis as { value: number } | undefined)?.value ?? -1;
    const dot = g.reduceSum(g.mul(dy!, y!), [axis], true);
    return [g.mul(y!, g.sub(dy!, dot))];
  },
  LogSoftmax: ({
    g,
    node: {
      outputs: [y],
      attrs,
    },
    dys: [dy],
  }) => {
    const axis = (attrs.axis as { value: number } | undefined)?.value ?? -1;
    return [g.sub(dy!, g.mul(g.exp(y!), g.reduceSum(dy!, [axis], true)))];
  },
  MatMul: ({
    g,
    node: {
      inputs: [a, b],
    },
    dys: [dy],
    needs,
  }) => {
    const da = needs[0] ? unbroadcast(g, g.matmulT(dy!, b!, { transB: true }), a!.shape) : undefined;
    let db: Value | undefined;
    if (needs[1]) {
      if (b!.shape.length === 2 && a!.shape.length > 2) {
        // Batch rows of A against a shared matrix: one 2-D GEMM instead of a batched product plus a sum.
        const k = a!.shape[a!.shape.length - 1]!;
        const n = dy!.shape[dy!.shape.length - 1]!;
        db = g.gemm(g.reshape(a!, [-1, k]), g.reshape(dy!, [-1, n]), { transA: true });
      } else {
        db = unbroadcast(g, g.matmulT(a!, dy!, { transA: true }), b!.shape);
      }
    }
    return [da, db];
  },
  Gemm: ({ g, node: { inputs, attrs }, dys: [dy], needs }) => {
    if (inputs.length > 2) throw new Error('gradient of Gemm with a C input is not supported');
    const [a, b] = inputs as [Value, Value];
    const tA = intAttr({ attrs } as GraphNode, 'transA', 0) === 1;
    const tB = intAttr({ attrs } as GraphNode, 'transB', 0) === 1;
    const alpha = (attrs.alpha as { value: number } | undefined)?.value ?? 1;
    const d = dy!;
    // Y = op(A)·op(B); each case below is that product differentiated with the transposes folded into flags.
    const da = !needs[0]
      ? undefined
      : !tA
        ? g.gemm(d, b, { transB: !tB, alpha })
        : g.gemm(b, d, { transA: tB, transB: true, alpha });
    const db = !needs[1]
      ? undefined
      : !tB
        ? g.gemm(a, d, { transA: !tA, alpha })
        : g.gemm(d, a, { transA: true, transB: tA, alpha });
    return [da, db];
  },
  Reshape: ({
    g,
    node: {
      inputs: [x],
    },
    dys: [dy],
  }) => [reshapeTo(g, dy!, x!), undefined],
  Expand: ({
    g,
    node: {
      inputs: [x],
    },
    dys: [dy],
  }) => [unbroadcast(g, dy!, x!.shape), undefined],
  Transpose: ({ g, node: { attrs }, dys: [dy] }) => {
    const perm = (attrs.perm as { value: number[] }).value;
    const inv = perm.map((_, k) => perm.indexOf(k));
    return [g.transpose(dy!, inv)];
  },
  Unsqueeze: ({
    g,
    node: {
      inputs: [, axes],
    },
    dys: [dy],
  }) => [g.squeeze(dy!, constInts(g, axes)), undefined],
  Squeeze: ({
    g,
    node: {
      inputs: [, axes],
    },
    dys: [dy],
  }) => [g.unsqueeze(dy!, constInts(g, axes)), undefined],
  Concat: ({ g, node: { inputs, attrs }, dys: [dy] }) => {
    const axis = (attrs.axis as { value: number }).value;
    const sizes = inputs.map((x) => x.shape[axis]!);
    if (!sizes.every((s): s is number => typeof s === 'number'))
      throw new Error('gradient of Concat along a symbolic axis is not supported');
    return g.split(dy!, sizes, axis);
  },
  Split: ({ g, node: { outputs, attrs }, dys }) => {
    const axis = (attrs.axis as { value: number }).value;
    return [
      g.concat(
        outputs.map((o, k) => dys[k] ?? g.zerosLike(o)),
        axis,
      ),
      undefined,
    ];
  },
  Gather: ({
    g,
    node: {
      inputs: [data, idx],
    },
    dys: [dy],
  }) => {
    // Embedding backward: scatter-add rows of dy into a zero table (repeated tokens accumulate).
    const rows = g.reshape(idx!, [-1, 1]); // [n, 1]
    const upd = g.reshape(dy!, [-1, ...data!.shape.slice(1)]); // [n, C]
    return [
      g.emit('ScatterND', [g.zerosLike(data!), rows, upd], { reduction: str('add') }, [
        { dtype: data!.dtype, shape: data!.shape },
      ])[0]!,
      undefined,
    ];
  },
  GatherElements: ({
    g,
    node: {
      inputs: [data, idx],
      attrs,
    },
    dys: [dy],
  }) => {
    const axis = (attrs.axis as { value: number }).value;
    return [
      g.emit('ScatterElements', [g.zerosLike(data!), idx!, dy!], { axis: i(axis), reduction: str('add') }, [
        { dtype: data!.dtype, shape: data!.shape },
      ])[0]!,
      undefined,
    ];
  },
};
