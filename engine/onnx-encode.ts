// ONNX serialisation of a built graph: opset 18 (plus com.microsoft when a contrib op is used), names
// from the builder's counters and sorted attributes, so equal build calls give byte-identical models.
import { onnx } from 'onnx-proto';
import { OPSET, dataType, type Attr, type Graph, type Value } from './graph';

export function encodeGraph(graph: Graph): Uint8Array {
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
    opsetImport: graph.nodes.some((n) => n.domain === 'com.microsoft')
      ? [
          { domain: '', version: OPSET },
          { domain: 'com.microsoft', version: 1 },
        ]
      : [{ domain: '', version: OPSET }],
    graph: {
      name: 'operaflow',
      input: graph.inputs.map(valueInfo),
      output: graph.outputs.map(valueInfo),
      initializer: graph.initializers.map(({ value, data }) => ({
        name: value.name,
        dataType: dataType[value.dtype],
        dims: value.shape.map(Number),
        rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      })),
      node: graph.nodes.map((n, k) => ({
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
