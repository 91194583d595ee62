import { createHash } from 'node:crypto';
import { canonicalJson, sha256 } from '../../util/canonical';

// The config hash and the dataset hash are sha256(canonicalJson(x)): two runs with the same inputs must
// record the same hashes whatever the key order, and different inputs must not collide by formatting.
describe('canonicalJson', () => {
  // Catches: scalars not reaching JSON.stringify (null taken for an object, booleans/strings rejected).
  it('writes scalars as JSON does', () => {
    expect(canonicalJson(null)).toBe('null');
    expect(canonicalJson(true)).toBe('true');
    expect(canonicalJson(false)).toBe('false');
    expect(canonicalJson('a "q"\n')).toBe('"a \\"q\\"\\n"');
    expect(canonicalJson(-1.5)).toBe('-1.5');
    expect(canonicalJson(0)).toBe('0');
  });

  // Catches: NaN / ±Infinity written as `null` (JSON.stringify's silent choice), so NaN and null hash alike.
  it('rejects non-finite numbers at any depth', () => {
    expect(() => canonicalJson(NaN)).toThrow('canonicalJson: non-finite number NaN');
    expect(() => canonicalJson({ a: [1, Infinity] })).toThrow('canonicalJson: non-finite number Infinity');
  });

  // Catches: unsorted keys, keys sorted only at the top level, or a different separator.
  it('sorts object keys at every depth, without whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 0, y: 1 }], c: 'x' } })).toBe(
      '{"a":{"c":"x","d":[2,{"y":1,"z":0}]},"b":1}',
    );
    // Key order in the source never matters.
    expect(canonicalJson({ z: 1, y: 2, x: 3 })).toBe(canonicalJson({ x: 3, y: 2, z: 1 }));
    // Code-unit order (as `<` compares strings): "B" (66) < "a" (97) < "aa".
    expect(canonicalJson({ aa: 1, a: 2, B: 3 })).toBe('{"B":3,"a":2,"aa":1}');
    expect(canonicalJson({})).toBe('{}');
  });

  // Catches: undefined members kept as keys (then an absent optional field and a missing one hash differently).
  it('drops undefined object members and writes undefined array items as null', () => {
    expect(canonicalJson({ a: 1, b: undefined })).toBe('{"a":1}');
    expect(canonicalJson({ a: 1, b: undefined })).toBe(canonicalJson({ a: 1 }));
    expect(canonicalJson([1, undefined, 'x'])).toBe('[1,null,"x"]');
    expect(canonicalJson([])).toBe('[]');
  });

  // Catches: functions, bigints, symbols or undefined serialised as something (e.g. `{}`) instead of refused.
  it('rejects values JSON cannot represent', () => {
    expect(() => canonicalJson(undefined)).toThrow('canonicalJson: unsupported value of type undefined');
    expect(() => canonicalJson(() => 1)).toThrow('canonicalJson: unsupported value of type function');
    expect(() => canonicalJson({ n: 1n })).toThrow('canonicalJson: unsupported value of type bigint');
  });
});

describe('sha256', () => {
  it('is the hex sha256 of the UTF-8 text or bytes', () => {
    // FIPS 180-2 test vector: sha256("abc").
    expect(sha256('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(sha256(new Uint8Array([0x61, 0x62, 0x63]))).toBe(sha256('abc'));
    expect(sha256('é')).toBe(
      createHash('sha256')
        .update(Buffer.from([0xc3, 0xa9]))
        .digest('hex'),
    );
  });
});
