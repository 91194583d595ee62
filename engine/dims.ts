// Symbolic dimension algebra for the graph builder: a dimension is a number or a monomial of named
// atoms ("T", "8*T"); a sum ("P+T") is kept as an opaque atom. Shapes are checked and broadcast with it.
import type { Dim } from './graph';

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
export function dimDivide(a: Dim, b: Dim): Dim {
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
export function dimSum(a: Dim, b: Dim): Dim {
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

export const normAxis = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);
