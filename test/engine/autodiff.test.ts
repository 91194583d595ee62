// Every gradient rule against central finite differences in float64, plus hand-computed cases and a
// whole-model check; a rule missing from this list fails the coverage test below.
import { gradients, gradRules } from '../../engine/autodiff';
import { Graph, i as intAttr, type Value } from '../../engine/graph';
import { Session, type Feeds } from '../../engine/ort';
import { rng } from './helpers';

interface Spec {
  shape: number[];
  data?: number[];
  int?: boolean;
  grad?: boolean;
  positive?: boolean;
}
const covered = new Set<string>();

async function gradCheck(op: string, specs: Spec[], build: (g: Graph, xs: Value[]) => Value, tol = 1e-6) {
  covered.add(op);
  const r = rng(op.length * 7919 + specs.length);
  const g = new Graph('float64');
  const xs = specs.map((s, k) => g.input(`x${k}`, s.int ? 'int64' : 'float64', s.shape));
  const out = build(g, xs);
  const outShape = out.shape as number[];
  const n = outShape.reduce((a, b) => a * b, 1);
  const weights = g.constant(
    Array.from({ length: n }, () => 2 * r() - 1),
    'float64',
    outShape,
  );
  const loss = g.reduceSum(
    g.mul(out, weights),
    outShape.map((_, k) => k),
    false,
  );
  const wrt = xs.filter((_, k) => !specs[k]!.int && specs[k]!.grad !== false);
  const grads = gradients(g, loss, wrt);
  g.output(loss, 'loss');
  grads.forEach((gr, k) => g.output(gr, `grad${k}`));
  const session = await Session.get(g.toBytes());
  const data = specs.map((s) => {
    const size = s.shape.reduce((a, b) => a * b, 1);
    if (s.int) return BigInt64Array.from((s.data ?? []).map(BigInt));
    return Float64Array.from(s.data ?? Array.from({ length: size }, () => (s.positive ? 0.5 + r() : 2 * r() - 1)));
  });
  const feeds = (): Feeds => Object.fromEntries(specs.map((s, k) => [`x${k}`, { data: data[k]!, dims: s.shape }]));
  const out0 = await session.run(feeds());
  let j = 0;
  for (const [k, s] of specs.entries()) {
    if (s.int || s.grad === false) continue;
    const analytic = out0[`grad${j++}`]!.data as Float64Array;
    const x = data[k] as Float64Array;
    expect(analytic.length).toBe(x.length);
    for (let e = 0; e < x.length; e++) {
      const h = 1e-6;
      const orig = x[e]!;
      x[e] = orig + h;
      const lp = (await session.run(feeds())).loss!.data[0] as number;
      x[e] = orig - h;
      const lm = (await session.run(feeds())).loss!.data[0] as number;
      x[e] = orig;
      const numeric = (lp - lm) / (2 * h);
      expect(Math.abs(analytic[e]! - numeric)).toBeLessThanOrEqual(tol * (1 + Math.abs(numeric)));
    }
  }
}

const S = (...shape: number[]): Spec => ({ shape });
const P = (...shape: number[]): Spec => ({ shape, positive: true });

describe('gradient rules match finite differences (float64)', () => {
  test('elementwise with broadcasting', async () => {
    await gradCheck('Add', [S(2, 3), S(3)], (g, [a, b]) => g.add(a!, b!));
    await gradCheck('Sub', [S(2, 1), S(1, 3)], (g, [a, b]) => g.sub(a!, b!));
    await gradCheck('Mul', [S(2, 3), S(2, 1)], (g, [a, b]) => g.mul(a!, b!));
    await gradCheck('Div', [S(2, 3), P(3)], (g, [a, b]) => g.div(a!, b!));
    await gradCheck('Neg', [S(4)], (g, [a]) => g.neg(a!));
    await gradCheck('Identity', [S(4)], (g, [a]) => g.identity(a!));
    await gradCheck('Exp', [S(2, 2)], (g, [a]) => g.exp(a!));
    await gradCheck('Log', [P(2, 2)], (g, [a]) => g.log(a!));
    await gradCheck('Sqrt', [P(3)], (g, [a]) => g.sqrt(a!));
    await gradCheck('Reciprocal', [P(3)], (g, [a]) => g.reciprocal(a!));
    await gradCheck('Sigmoid', [S(5)], (g, [a]) => g.sigmoid(a!));
    await gradCheck('Pow', [P(4)], (g, [a]) => g.pow(a!, g.scalar(2.5)));
    await gradCheck('Cast', [S(3)], (g, [a]) => g.cast(a!, 'float64'));
  });

  test('selection ops', async () => {
    await gradCheck('Where', [S(2, 3), S(2, 3), S(3)], (g, [c, a, b]) => g.where(g.less(c!, g.scalar(0)), a!, b!));
    await gradCheck('Clip', [{ shape: [6], data: [-2, -0.5, 0.1, 0.7, 1.5, 3] }], (g, [a]) =>
      g.clip(a!, g.scalar(-1), g.scalar(1)),
    );
    await gradCheck(
      'Max',
      [
        { shape: [4], data: [1, -1, 0.3, 2] },
        { shape: [4], data: [0, 0.5, 0.2, 3] },
      ],
      (g, [a, b]) => g.max(a!, b!),
    );
    await gradCheck(
      'Min',
      [
        { shape: [4], data: [1, -1, 0.3, 2] },
        { shape: [1], data: [0.25] },
      ],
      (g, [a, b]) => g.min(a!, b!),
    );
  });

  test('reductions and normalisations', async () => {
    await gradCheck('ReduceSum', [S(2, 3, 2)], (g, [a]) =>
      g.add(g.reduceSum(a!, [1], false), g.reduceSum(a!, [0, 1], true)),
    );
    await gradCheck('ReduceMean', [S(2, 3)], (g, [a]) => g.reduceMean(a!, [-1], true));
    await gradCheck('Softmax', [S(2, 4)], (g, [a]) => g.softmax(a!, -1));
    await gradCheck('LogSoftmax', [S(3, 4)], (g, [a]) => g.logSoftmax(a!, -1));
  });

  test('matrix products', async () => {
    await gradCheck('MatMul', [S(2, 1, 3, 4), S(3, 4, 2)], (g, [a, b]) => g.matmul(a!, b!)); // batch broadcast
    await gradCheck('MatMul', [S(2, 3, 4), S(4, 5)], (g, [a, b]) => g.matmul(a!, b!)); // rows against a shared matrix
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        await gradCheck('Gemm', [S(...(transA ? [4, 3] : [3, 4])), S(...(transB ? [2, 4] : [4, 2]))], (g, [a, b]) =>
          g.gemm(a!, b!, { transA, transB, alpha: 0.5 }),
        );
      }
    }
  });

  test('shape plumbing', async () => {
    await gradCheck('Reshape', [S(2, 6)], (g, [a]) => g.reshape(a!, [3, -1]));
    await gradCheck('Transpose', [S(2, 3, 4)], (g, [a]) => g.transpose(a!, [2, 0, 1]));
    await gradCheck('Unsqueeze', [S(3)], (g, [a]) => g.unsqueeze(a!, [0, 2]));
    await gradCheck('Squeeze', [S(1, 3, 1)], (g, [a]) => g.squeeze(a!, [0, 2]));
    await gradCheck('Concat', [S(2, 1), S(2, 3)], (g, [a, b]) => g.concat([a!, b!], 1));
    await gradCheck('Split', [S(2, 5)], (g, [a]) => g.split(a!, [2, 3], 1)[1]!); // one output unused: zeros fill in
    await gradCheck(
      'Expand',
      [S(3, 1)],
      (g, [a]) => g.emit('Expand', [a!, g.ints([2, 3, 4])], {}, [{ dtype: 'float64', shape: [2, 3, 4] }])[0]!,
    );
  });

  test('indexing', async () => {
    await gradCheck('Gather', [S(5, 3), { shape: [2, 3], int: true, data: [0, 4, 0, 2, 2, 2] }], (g, [w, idx]) =>
      g.gather(w!, idx!),
    );
    await gradCheck('GatherElements', [S(3, 4), { shape: [3, 1], int: true, data: [3, 0, 2] }], (g, [x, idx]) =>
      g.gatherElements(x!, idx!, 1),
    );
    // Catches: the scatter not accumulating (reduction 'add') when a row picks the same element twice.
    await gradCheck(
      'GatherElements',
      [S(3, 4), { shape: [3, 3], int: true, data: [3, 3, 0, 1, 1, 1, 2, 0, 2] }],
      (g, [x, idx]) => g.gatherElements(x!, idx!, 1),
    );
  });

  test('FusedMatMul (float32 graphs) gives the same gradients as explicit transposes', async () => {
    const r = rng(9);
    const build = (ft: 'float32' | 'float64') => {
      const g = new Graph(ft);
      const a = g.input('a', ft, [2, 2, 3, 4]);
      const b = g.input('b', ft, [2, 1, 4, 5]);
      const [da, db] = gradients(g, g.reduceSum(g.mul(g.matmul(a, b), g.matmul(a, b)), [0, 1, 2, 3], false), [a, b]);
      g.output(da!, 'da');
      g.output(db!, 'db');
      return g;
    };
    const a = Array.from({ length: 48 }, () => r() - 0.5);
    const b = Array.from({ length: 40 }, () => r() - 0.5);
    const g32 = build('float32');
    expect(g32.nodes.some((n) => n.op === 'FusedMatMul')).toBe(true);
    const o32 = await (
      await Session.get(g32.toBytes())
    ).run({
      a: { data: Float32Array.from(a), dims: [2, 2, 3, 4] },
      b: { data: Float32Array.from(b), dims: [2, 1, 4, 5] },
    });
    const o64 = await (
      await Session.get(build('float64').toBytes())
    ).run({
      a: { data: Float64Array.from(a), dims: [2, 2, 3, 4] },
      b: { data: Float64Array.from(b), dims: [2, 1, 4, 5] },
    });
    for (const k of ['da', 'db']) {
      const x = o32[k]!.data as Float32Array;
      const y = o64[k]!.data as Float64Array;
      expect(x.length).toBe(y.length);
      x.forEach((v, e) => expect(Math.abs(v - y[e]!)).toBeLessThan(1e-5));
    }
  });

  test('every rule in the table is checked above', () => {
    expect([...Object.keys(gradRules)].filter((op) => !covered.has(op))).toEqual([]);
  });
});

// Catches: a broken ReduceMean rule for symbolic axes (the count taken at run time as
// Size(x) / Size(y)): static-shape checks above never reach that branch.
describe('ReduceMean over a symbolic axis', () => {
  /**
   * loss = Σ_i w_i · Σ mean(x[i, …]) over the reduced axes, for a graph built once with symbolic dims and run at
   * several sizes. d loss / d x[i, …] = w_i / (number of reduced elements): checked against that hand
   * formula and against central finite differences in float64.
   */
  async function check(
    shape: (number | string)[],
    axes: number[],
    sizes: Record<string, number>[],
    count: (s: Record<string, number>) => number,
  ) {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', shape);
    const y = g.reduceMean(x, axes, false); // [2, …kept axes]
    const wShape = y.shape.map((_, k) => (k === 0 ? 2 : 1)); // w_i broadcast over row i
    const w = g.input('w', 'float64', wShape);
    const loss = g.reduceSum(
      g.mul(y, w),
      y.shape.map((_, k) => k),
      false,
    );
    g.output(loss, 'loss');
    const dxValue = gradients(g, loss, [x])[0]!;
    expect(dxValue.shape).toEqual(shape); // declared shape too: later graph building reads it
    g.output(dxValue, 'dx');
    const session = await Session.get(g.toBytes());
    const r = rng(5);
    for (const s of sizes) {
      const dims = shape.map((d) => (typeof d === 'number' ? d : s[d]!));
      const n = dims.reduce((a, b) => a * b, 1);
      const data = Float64Array.from({ length: n }, () => 2 * r() - 1);
      const wv = Float64Array.of(0.3, -0.7);
      const feeds = (): Feeds => ({ x: { data, dims }, w: { data: wv, dims: wShape } });
      const dx = (await session.run(feeds())).dx!.data as Float64Array;
      const per = n / 2; // elements of x under each output (axis 0, of size 2, is kept)
      expect(dx.length).toBe(n);
      dx.forEach((v, e) => expect(v).toBeCloseTo(wv[Math.floor(e / per)]! / count(s), 12));
      for (const e of [0, n - 1]) {
        const orig = data[e]!;
        data[e] = orig + 1e-6;
        const lp = (await session.run(feeds())).loss!.data[0] as number;
        data[e] = orig - 1e-6;
        const lm = (await session.run(feeds())).loss!.data[0] as number;
        data[e] = orig;
        expect(Math.abs(dx[e]! - (lp - lm) / 2e-6)).toBeLessThan(1e-8);
      }
    }
  }

  test('one symbolic axis reduced: dx = w / N at every N', async () => {
    // x [2, N], mean over N: N = 3 → w/3, N = 5 → w/5 (one graph, two sizes).
    await check([2, 'N'], [1], [{ N: 3 }, { N: 5 }], (s) => s.N!);
  });

  test('a symbolic and a static axis reduced together: dx = w / (3·N)', async () => {
    // x [2, N, 3], mean over axes 1 and 2 (negative -1 for the static one): 3·N elements per output.
    await check([2, 'N', 3], [1, -1], [{ N: 1 }, { N: 4 }], (s) => 3 * s.N!);
  });

  test('a symbolic axis that is kept does not enter the count', async () => {
    // x [2, M, 4] with mean over the static axis 2 only; M is symbolic but not reduced → dx = w / 4.
    await check([2, 'M', 4], [2], [{ M: 1 }, { M: 3 }], () => 4);
  });
});

describe('gradient rules: less common inputs', () => {
  const run = async (g: Graph, feeds: Feeds) => (await Session.get(g.toBytes())).run(feeds);

  // Catches: Softmax/LogSoftmax emitted without an axis attribute differentiated along the wrong axis
  // (ONNX opset 13+ defaults to the last axis, -1).
  test('Softmax and LogSoftmax without an axis attribute use the last axis', async () => {
    const noAxis =
      (op: string) =>
      (g: Graph, [a]: Value[]) =>
        g.emit(op, [a!], {}, [{ dtype: 'float64', shape: [2, 3, 4] }])[0]!;
    await gradCheck('Softmax', [S(2, 3, 4)], noAxis('Softmax'));
    await gradCheck('LogSoftmax', [S(2, 3, 4)], noAxis('LogSoftmax'));
  });

  // Catches: a float32 → float64 Cast (mixed precision) dropping the gradient of its float32 input.
  test('Cast from float32 passes the gradient back as float32', async () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float32', [3]);
    const y = g.cast(x, 'float64');
    g.output(gradients(g, g.reduceSum(g.mul(y, y), [0], false), [x])[0]!, 'dx');
    const out = await run(g, { x: { data: Float32Array.of(1, -2, 0.5), dims: [3] } });
    expect(out.dx!.data).toBeInstanceOf(Float32Array);
    expect(Array.from(out.dx!.data as Float32Array)).toEqual([2, -4, 1]); // d Σ y² / dx = 2x
  });

  // Catches: unsupported gradients computed silently (as zero or ignored) instead of refused, naming op and input.
  test('refuses gradients it cannot compute, naming op, input and reason', () => {
    const build = (f: (g: Graph, x: Value, p: Value) => Value) => {
      const g = new Graph('float64');
      const x = g.input('x', 'float64', [2, 2]);
      const p = g.input('p', 'float64', []);
      return () => gradients(g, g.reduceSum(f(g, x, p), [0, 1], false), [x, p]);
    };
    expect(build((g, x, p) => g.pow(x, p))).toThrow(
      'gradient of Pow input 1 is not supported (exponent must be constant)',
    );
    expect(build((g, x, p) => g.clip(x, p, g.scalar(1)))).toThrow(
      'gradient of Clip input 1 is not supported (bounds must be constant)',
    );
    expect(build((g, x, p) => g.clip(x, g.scalar(-1), p))).toThrow(
      'gradient of Clip input 2 is not supported (bounds must be constant)',
    );
    expect(build((g, x, p) => g.emit('Gemm', [x, x, p], {}, [{ dtype: 'float64', shape: [2, 2] }])[0]!)).toThrow(
      'gradient of Gemm with a C input is not supported',
    );
    expect(build((g, x) => g.concat([x, g.input('z', 'float64', [2, 'N'])], 1))).toThrow(
      'gradient of Concat along a symbolic axis is not supported',
    );
    expect(
      build(
        (g, x) =>
          g.emit('ReduceSum', [x, g.input('axes', 'int64', [1])], { keepdims: intAttr(0) }, [
            { dtype: 'float64', shape: [2] },
          ])[0]!,
      ),
    ).toThrow('expected a constant int64 input, got axes');
    // A constant exponent or bound needs no gradient: fine.
    expect(build((g, x) => g.pow(x, g.scalar(2)))).not.toThrow();
    expect(build((g, x) => g.clip(x, g.scalar(-1), g.scalar(1)))).not.toThrow();
  });

  // Catches: a loss that does not depend on the inputs returning zero gradients instead of an error.
  test('refuses a loss that does not depend on the requested inputs', () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', [2]);
    const c = g.input('c', 'float64', [2]);
    expect(() => gradients(g, g.reduceSum(g.mul(c, c), [0], false), [x])).toThrow(
      'loss does not depend on any of the requested inputs',
    );
  });

  // Catches: a value's summed gradient lost when it is read twice (by its producer and as a requested
  // output), and rules run for a producer none of whose inputs need a gradient (Tanh has no rule).
  test('differentiates with respect to an intermediate value used twice', async () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', [3]);
    const h = g.emit('Tanh', [x], {}, [{ dtype: 'float64', shape: [3] }])[0]!;
    const loss = g.reduceSum(g.add(g.mul(h, h), h), [0], false); // Σ h² + h → d/dh = 2h + 1
    g.output(h, 'h');
    g.output(gradients(g, loss, [h])[0]!, 'dh');
    const out = await run(g, { x: { data: Float64Array.of(0.1, -0.5, 2), dims: [3] } });
    const hv = out.h!.data as Float64Array;
    Array.from(out.dh!.data as Float64Array).forEach((v, k) => expect(v).toBeCloseTo(2 * hv[k]! + 1, 12));
  });

  // Catches: taking the outputs of every node as differentiable, so a path that never touches the
  // requested inputs (here through Tanh, which has no rule) gets differentiated and fails.
  test('a chain that does not depend on the requested inputs is not differentiated', () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', [2]);
    const c = g.input('c', 'float64', [2]);
    const t = g.emit('Tanh', [g.neg(c)], {}, [{ dtype: 'float64', shape: [2] }])[0]!;
    expect(() => gradients(g, g.reduceSum(g.mul(x, t), [0], false), [x])).not.toThrow();
  });

  // Catches: a rule doing the work for an input that needs no gradient (here the constant matrix of x·W).
  test('MatMul computes no gradient for an input that needs none', () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', [3, 4]);
    const w = g.constant(
      Array.from({ length: 20 }, (_, k) => k / 20),
      'float64',
      [4, 5],
    );
    const before = g.nodes.length;
    gradients(g, g.reduceSum(g.matmul(x, w), [0, 1], false), [x]);
    expect(g.nodes.slice(before + 2).filter((n) => n.op === 'MatMul' || n.op === 'Gemm')).toHaveLength(1); // dx = dy·Wᵀ only
  });

  // Catches: a static reduced axis taking the run-time path (Size nodes) or a negative axis miscounted.
  // The count of a static reduction is a constant folded into the graph.
  test('ReduceMean over static axes (negative ones too) divides by a constant count', async () => {
    for (const axes of [[0], [-1], [0, 2]]) {
      const g = new Graph('float64');
      const x = g.input('x', 'float64', [2, 3, 4]);
      const out = [2, 3, 4].filter((_, k) => !axes.map((a) => (a + 3) % 3).includes(k));
      // Emitted directly so a negative axis reaches the rule as written (Graph.reduceMean normalises it).
      const y = g.emit('ReduceMean', [x, g.ints(axes)], { keepdims: intAttr(0) }, [
        { dtype: 'float64', shape: out },
      ])[0]!;
      const [dx] = gradients(
        g,
        g.reduceSum(
          y,
          out.map((_, k) => k),
          false,
        ),
        [x],
      );
      expect(g.nodes.filter((n) => n.op === 'Size')).toHaveLength(0);
      g.output(dx!, 'dx');
      const count = axes.map((a) => [2, 3, 4].at(a)!).reduce((p, q) => p * q, 1);
      const res = await run(g, { x: { data: new Float64Array(24), dims: [2, 3, 4] } });
      Array.from(res.dx!.data as Float64Array).forEach((v) => expect(v).toBeCloseTo(1 / count, 15));
    }
  });

  // Catches: the weight gradient of rows against a shared matrix ([B, T, K]·[K, N]) built as a batched
  // product plus a sum over B instead of one 2-D GEMM over all B·T rows (the cheaper form, chosen on purpose).
  test('a shared weight matrix gets its gradient from one Gemm', () => {
    const g = new Graph('float64');
    const a = g.input('a', 'float64', [2, 3, 4]);
    const w = g.input('w', 'float64', [4, 5]);
    const before = g.nodes.length;
    gradients(g, g.reduceSum(g.matmul(a, w), [0, 1, 2], false), [w]);
    const backward = g.nodes.slice(before + 2).map((n) => n.op); // after the forward MatMul and ReduceSum
    expect(backward.filter((op) => op === 'Gemm')).toHaveLength(1);
    expect(backward.filter((op) => op === 'MatMul')).toHaveLength(0);
    // A 2-D input has no batch to fold: the general rule (a transposed MatMul) applies.
    const g2 = new Graph('float64');
    const a2 = g2.input('a', 'float64', [3, 4]);
    const w2 = g2.input('w', 'float64', [4, 5]);
    const before2 = g2.nodes.length;
    gradients(g2, g2.reduceSum(g2.matmul(a2, w2), [0, 1], false), [w2]);
    expect(g2.nodes.slice(before2 + 2).filter((n) => n.op === 'Gemm')).toHaveLength(0);
  });
});

describe('hand-computed gradients', () => {
  async function run(g: Graph, feeds: Feeds) {
    return (await Session.get(g.toBytes())).run(feeds);
  }

  test('d/dx sum(x·x) = 2x and repeated use accumulates', async () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', [3]);
    const y = g.reduceSum(g.add(g.mul(x, x), x), [0], false); // Σ x² + x
    g.output(gradients(g, y, [x])[0]!, 'dx');
    const out = await run(g, { x: { data: Float64Array.of(1, 2, 3), dims: [3] } });
    expect(Array.from(out.dx!.data as Float64Array)).toEqual([3, 5, 7]);
  });

  test('cross-entropy gradient is softmax minus one-hot', async () => {
    const g = new Graph('float64');
    const z = g.input('z', 'float64', [1, 3]);
    const t = g.constant([2], 'int64', [1, 1]);
    const nll = g.neg(g.reduceSum(g.gatherElements(g.logSoftmax(z, -1), t, 1), [0, 1], false));
    g.output(gradients(g, nll, [z])[0]!, 'dz');
    const out = await run(g, { z: { data: Float64Array.of(0, Math.log(2), Math.log(5)), dims: [1, 3] } }); // softmax = [1/8, 2/8, 5/8]
    const dz = Array.from(out.dz!.data as Float64Array);
    [1 / 8, 2 / 8, 5 / 8 - 1].forEach((want, k) => expect(dz[k]).toBeCloseTo(want, 12));
  });

  test('embedding gradient counts repeated tokens', async () => {
    const g = new Graph('float64');
    const w = g.input('w', 'float64', [4, 2]);
    const ids = g.constant([1, 3, 1, 1], 'int64', [4]);
    g.output(gradients(g, g.reduceSum(g.gather(w, ids), [0, 1], false), [w])[0]!, 'dw');
    const out = await run(g, { w: { data: new Float64Array(8), dims: [4, 2] } });
    expect(Array.from(out.dw!.data as Float64Array)).toEqual([0, 0, 3, 3, 0, 0, 1, 1]);
  });

  test('an op without a rule fails loudly, naming it', () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', [2]);
    const y = g.emit('Tanh', [x], {}, [{ dtype: 'float64', shape: [2] }])[0]!;
    expect(() => gradients(g, g.reduceSum(y, [0], false), [x])).toThrow('no gradient rule for op Tanh');
  });

  test('paths that do not reach the requested inputs are skipped', () => {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', [2]);
    const c = g.input('c', 'float64', [2]);
    const y = g.reduceSum(g.mul(x, g.emit('Tanh', [c], {}, [{ dtype: 'float64', shape: [2] }])[0]!), [0], false);
    expect(() => gradients(g, y, [x])).not.toThrow();
  });
});
