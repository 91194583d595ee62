// Reverse-mode autodiff over a Graph, with the gradient rules of grad-rules.ts (one per ONNX op type).
// The backward pass is emitted into the same graph as ordinary ONNX ops, so forward and backward run as
// one ORT session. An op on the differentiated path without a rule throws, naming it.
import { type Graph, type GraphNode, type Value, NON_DIFFERENTIABLE } from './graph';
import { gradRules } from './grad-rules';

export interface GradContext {
  g: Graph;
  node: GraphNode;
  /** Gradient of each node output (undefined when that output does not reach the loss). */
  dys: (Value | undefined)[];
  /** Whether each input needs a gradient (rules may skip work for the others). */
  needs: boolean[];
}
export type GradRule = (ctx: GradContext) => (Value | undefined)[];

export { gradRules } from './grad-rules';

/**
 * Appends the backward pass of `loss` (a scalar) to g and returns d loss / d w for each w in wrt.
 * Nodes are visited in reverse insertion order, which is a valid reverse topological order.
 */
export function gradients(g: Graph, loss: Value, wrt: Value[]): Value[] {
  const isFloat = (v: Value) => v.dtype === 'float32' || v.dtype === 'float64';
  const active = new Set(wrt.map((w) => w.name));
  const forward = [...g.nodes];
  for (const n of forward) {
    if (NON_DIFFERENTIABLE.has(n.op)) continue;
    if (n.inputs.some((v) => active.has(v.name))) for (const o of n.outputs) if (isFloat(o)) active.add(o.name);
  }
  if (!active.has(loss.name)) throw new Error('loss does not depend on any of the requested inputs');

  const pending = new Map<string, Value[]>();
  const push = (v: Value, dv: Value) => {
    const list = pending.get(v.name);
    if (list) list.push(dv);
    else pending.set(v.name, [dv]);
  };
  const total = (v: Value): Value | undefined => {
    const list = pending.get(v.name);
    if (!list) return undefined;
    if (list.length === 1) return list[0];
    const s = g.emit('Sum', list, {}, [{ dtype: v.dtype, shape: v.shape }])[0]!;
    pending.set(v.name, [s]);
    return s;
  };
  push(loss, g.scalar(1));

  for (let k = forward.length - 1; k >= 0; k--) {
    const node = forward[k]!;
    const dys = node.outputs.map(total);
    if (dys.every((d) => d === undefined)) continue;
    const needs = node.inputs.map((v) => active.has(v.name) && isFloat(v));
    if (!needs.some(Boolean)) continue;
    const rule = gradRules[node.op];
    if (!rule) throw new Error(`no gradient rule for op ${node.op}`);
    const dxs = rule({ g, node, dys, needs });
    node.inputs.forEach((v, j) => {
      const dx = dxs[j];
      if (needs[j] && dx) push(v, dx);
    });
  }
  return wrt.map((w) => total(w) ?? g.zerosLike(w));
}
