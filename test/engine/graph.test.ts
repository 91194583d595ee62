import { onnx } from 'onnx-proto';
import { Graph, OPSET } from '../../engine/graph';
import { LlamaModel } from '../../engine/model';
import { Session, checkProviders, graphHash } from '../../engine/ort';
import { randomWeights, tinyGqa } from './helpers';

function build(): Graph {
  const g = new Graph('float32');
  const a = g.input('a', 'float32', [2, 'T']);
  const b = g.input('b', 'float32', ['T', 3]);
  g.output(g.gemm(a, b, { alpha: 1 }), 'y');
  g.output(g.softmax(g.reshape(g.mul(a, g.scalar(2)), [-1]), -1), 'flat');
  return g;
}

describe('Graph builder', () => {
  test('same build calls give identical bytes (and hash)', () => {
    const x = build().toBytes();
    const y = build().toBytes();
    expect(Buffer.from(x).equals(Buffer.from(y))).toBe(true);
    expect(graphHash(x)).toBe(graphHash(y));
  });

  test('emits opset 18 and types float attributes as FLOAT even when integral', () => {
    const model = onnx.ModelProto.decode(build().toBytes());
    expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', OPSET]]);
    const gemm = model.graph?.node?.find((n) => n.opType === 'Gemm');
    const attrs = gemm?.attribute ?? [];
    const alpha = attrs.find((a) => a.name === 'alpha')!;
    expect(alpha.type).toBe(onnx.AttributeProto.AttributeType.FLOAT);
    expect(alpha.f).toBe(1);
    expect(attrs.find((a) => a.name === 'transA')!.type).toBe(onnx.AttributeProto.AttributeType.INT);
  });

  test('tracks symbolic shapes and runs with any length', async () => {
    const g = build();
    expect(g.outputs.map((o) => o.shape)).toEqual([[2, 3], ['2*T']]);
    const s = await Session.get(g.toBytes());
    const out = await s.run({
      a: { data: Float32Array.of(1, 2, 3, 4), dims: [2, 2] },
      b: { data: Float32Array.of(1, 0, 0, 0, 1, 0), dims: [2, 3] },
    });
    expect(Array.from(out.y!.data as Float32Array)).toEqual([1, 2, 0, 3, 4, 0]);
    const flat = out.flat!.data as Float32Array;
    expect(flat.reduce((p, q) => p + q, 0)).toBeCloseTo(1, 6);
  });

  test('reshape refuses an ambiguous symbolic target', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', ['B', 'T', 4]);
    expect(() => g.reshape(x, ['T', 'B', 4])).toThrow(/symbolic dim T/);
    expect(g.reshape(x, ['B', -1]).shape).toEqual(['B', '4*T']);
  });
});

describe('execution providers', () => {
  test('an unknown provider fails with a message naming what is available', () => {
    expect(() => checkProviders(['nosuch'])).toThrow(/"nosuch" is unavailable.*supported here: cpu/);
    expect(() => new LlamaModel(tinyGqa, randomWeights(tinyGqa, 1), { providers: ['nosuch'] })).toThrow(/unavailable/);
  });

  test('a provider whose libraries are missing fails loudly with install instructions, never falling back', async () => {
    const model = new LlamaModel(tinyGqa, randomWeights(tinyGqa, 1), { providers: ['cuda'] });
    await expect(model.tokenLogps([{ tokens: [1, 2, 3], start: 1 }])).rejects.toThrow(/cuda.*(install|CUDA)/s);
  });
});
