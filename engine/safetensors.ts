/**
 * The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
 * length N, N bytes of JSON `{ name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: {…} }`,
 * then the raw little-endian tensor bytes (offsets relative to the end of the header).
 *
 * We write F32 only (what the engine computes in). Reading also accepts F16, BF16 and F64, converted
 * to F32, so checkpoints exported by other tools in those dtypes load too.
 */
import { endianness } from 'node:os';
import { jsonProblem } from '../util/json';

export interface TensorEntry {
  shape: number[];
  data: Float32Array;
}

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };
/** Larger headers than this are a corrupt length field, not a real checkpoint. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function assertLittleEndianHost(): void {
  // Float32Array views use host byte order; safetensors is little-endian on disk.
  if (endianness() !== 'LE') throw new Error('safetensors: this code assumes a little-endian host');
}

export function encodeSafetensors(tensors: Map<string, TensorEntry>, metadata?: Record<string, string>): Buffer {
  assertLittleEndianHost();
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`safetensors: metadata "${k}" must be a string, got ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  // Sorted names: the same tensors always give the same bytes (and the same sha256).
  const names = [...tensors.keys()].sort();
  let offset = 0;
  for (const name of names) {
    if (name === '__metadata__') throw new Error('safetensors: "__metadata__" is reserved and cannot name a tensor');
    const { shape, data } = tensors.get(name)!;
    const count = shape.reduce((a, b) => a * b, 1);
    if (!shape.every((d) => Number.isInteger(d) && d >= 0) || count !== data.length) {
      throw new Error(
        `safetensors: tensor "${name}" has shape [${shape.join(', ')}] (${count} elements) but ${data.length} values`,
      );
    }
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data starts 8-byte aligned, as the reference implementation does.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.length;
  for (const name of names) {
    const { data } = tensors.get(name)!;
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, at);
    at += data.byteLength;
  }
  return out;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function toFloat32(dtype: string, bytes: Buffer, count: number): Float32Array {
  const out = new Float32Array(count);
  if (dtype === 'F32') {
    new Uint8Array(out.buffer).set(bytes); // copy: the source may not be 4-byte aligned
  } else if (dtype === 'BF16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = bytes.readUInt16LE(2 * i) << 16;
  } else if (dtype === 'F16') {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(bytes.readUInt16LE(2 * i));
  } else {
    for (let i = 0; i < count; i++) out[i] = bytes.readDoubleLE(8 * i);
  }
  return out;
}

export function decodeSafetensors(buf: Buffer): {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
} {
  assertLittleEndianHost();
  if (buf.length < 8) throw new Error(`safetensors: ${buf.length} bytes is too short for the 8-byte header length`);
  const headerLen = Number(buf.readBigUInt64LE(0));
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > buf.length) {
    throw new Error(`safetensors: header length ${headerLen} does not fit in a ${buf.length}-byte file`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`safetensors: header is not valid JSON (${jsonProblem(err)})`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorEntry>();
  const spans: [number, number, string][] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      for (const [k, v] of Object.entries((raw ?? {}) as Record<string, unknown>)) {
        if (typeof v !== 'string')
          throw new Error(`safetensors: __metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = String(info.dtype);
    const size = BYTES[dtype];
    if (size === undefined)
      throw new Error(`safetensors: tensor "${name}" has dtype ${dtype}; supported: ${Object.keys(BYTES).join(', ')}`);
    const shape = info.shape;
    const offsets = info.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new Error(`safetensors: tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) {
      throw new Error(`safetensors: tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end - begin !== count * size || end > dataLen) {
      throw new Error(
        `safetensors: tensor "${name}" (${dtype} [${shape.join(', ')}]) needs ${count * size} bytes but data_offsets [${begin}, ${end}] give ${end - begin} within ${dataLen} data bytes`,
      );
    }
    spans.push([begin, end, name]);
    tensors.set(name, {
      shape: shape as number[],
      data: toFloat32(dtype, buf.subarray(dataStart + begin, dataStart + end), count),
    });
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let k = 1; k < spans.length; k++) {
    if (spans[k]![0] < spans[k - 1]![1])
      throw new Error(`safetensors: tensors "${spans[k - 1]![2]}" and "${spans[k]![2]}" overlap`);
  }
  return { tensors, metadata };
}
