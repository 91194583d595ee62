// Every gradient rule against central finite differences in float64, plus hand-computed cases and a
// whole-model check; a rule missing from this list fails the coverage test below.
import { gradients, gradRules } from '../../engine/autodiff';
import { Graph, type Value } from '../../engine/graph';
import { Session, type Feeds } from '../../engine/ort';
import { rng } from './helpers';

interface Spec { shape: number[]; data?: number[]; int?: boolean; grad?: boolean; positive?: boolean }
const covered = new Set<string>();

async function gradCheck(op: string, specs: Spec[], build: (g: Graph, xs: Value[]) => Value, tol = 1e-6) {
  covered.add(op);
  const r = rng(op.length * 7919 + specs.length);
  const g = new Graph('float64');
  const xs = specs.map((s, k) => g.input(`x${k}`, s.int ? 'int64' : 'float64', s.shape));
  const out = build(g, xs);
  const outShape = out.shape as number[];
  const n = outShape.reduce((a, b) => a * b, 1);
  const weights = g.constant(Array.from({ length: n }, () => 2 * r() - 1), 'float64', outShape);
  const loss = g.reduceSum(g.mul(out, weights), outShape.map((_, k) => k), false);
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
    await gradCheck('Clip', [{ shape: [6], data: [-2, -0.5, 0.1, 0.7, 1.5, 3] }], (g, [a]) => g.clip(a!, g.scalar(-1), g.scalar(1)));
    await gradCheck('Max', [{ shape: [4], data: [1, -1, 0.3, 2] }, { shape: [4], data: [0, 0.5, 0.2, 3] }], (g, [a, b]) => g.max(a!, b!));
    await gradCheck('Min', [{ shape: [4], data: [1, -1, 0.3, 2] }, { shape: [1], data: [0.25] }], (g, [a, b]) => g.min(a!, b!));
  });

  test('reductions and normalisations', async () => {
    await gradCheck('ReduceSum', [S(2, 3, 2)], (g, [a]) => g.add(g.reduceSum(a!, [1], false), g.reduceSum(a!, [0, 1], true)));
    await gradCheck('ReduceMean', [S(2, 3)], (g, [a]) => g.reduceMean(a!, [-1], true));
    await gradCheck('Softmax', [S(2, 4)], (g, [a]) => g.softmax(a!, -1));
    await gradCheck('LogSoftmax', [S(3, 4)], (g, [a]) => g.logSoftmax(a!, -1));
  });

  test('matrix products', async () => {
    await gradCheck('MatMul', [S(2, 1, 3, 4), S(3, 4, 2)], (g, [a, b]) => g.matmul(a!, b!)); // batch broadcast
    await gradCheck('MatMul', [S(2, 3, 4), S(4, 5)], (g, [a, b]) => g.matmul(a!, b!)); // rows against a shared matrix
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        await gradCheck('Gemm', [S(...(transA ? [4, 3] : [3, 4])), S(...(transB ? [2, 4] : [4, 2]))], (g, [a, b]) => g.gemm(a!, b!, { transA, transB, alpha: 0.5 }));
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
    await gradCheck('Expand', [S(3, 1)], (g, [a]) => g.emit('Expand', [a!, g.ints([2, 3, 4])], {}, [{ dtype: 'float64', shape: [2, 3, 4] }])[0]!);
  });

  test('indexing', async () => {
    await gradCheck('Gather', [S(5, 3), { shape: [2, 3], int: true, data: [0, 4, 0, 2, 2, 2] }], (g, [w, idx]) => g.gather(w!, idx!));
    await gradCheck('GatherElements', [S(3, 4), { shape: [3, 1], int: true, data: [3, 0, 2] }], (g, [x, idx]) => g.gatherElements(x!, idx!, 1));
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
    const o32 = await (await Session.get(g32.toBytes())).run({ a: { data: Float32Array.from(a), dims: [2, 2, 3, 4] }, b: { data: Float32Array.from(b), dims: [2, 1, 4, 5] } });
    const o64 = await (await Session.get(build('float64').toBytes())).run({ a: { data: Float64Array.from(a), dims: [2, 2, 3, 4] }, b: { data: Float64Array.from(b), dims: [2, 1, 4, 5] } });
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
  async function check(shape: (number | string)[], axes: number[], sizes: Record<string, number>[], count: (s: Record<string, number>) => number) {
    const g = new Graph('float64');
    const x = g.input('x', 'float64', shape);
    const y = g.reduceMean(x, axes, false); // [2, …kept axes]
    const wShape = y.shape.map((_, k) => (k === 0 ? 2 : 1)); // w_i broadcast over row i
    const w = g.input('w', 'float64', wShape);
    const loss = g.reduceSum(g.mul(y, w), y.shape.map((_, k) => k), false);
    g.output(loss, 'loss');
    g.output(gradients(g, loss, [x])[0]!, 'dx');
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
