/**
 * Canonical JSON and sha256: the one sha256 of the project (artifacts, checkpoints, graphs, the config
 * and dataset hashes). Two runs with the same inputs record the same hashes regardless of key order in
 * the source files.
 */
import { createHash } from 'node:crypto';

/**
 * JSON with object keys sorted at every depth and no whitespace. `undefined` members are dropped
 * (as JSON.stringify does) so an absent optional field and a missing one hash the same.
 * Non-finite numbers are rejected: JSON would silently turn them into `null`.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`canonicalJson: non-finite number ${value}`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  if (typeof value === 'object') {
    // Keys are unique (the comparator never sees a === b) and sort() reads only the sign of its result
    // (< 0 or not), so `a <= b` for `a < b` and any change to the `a > b ? 1 : 0` branch sort alike:
    // equivalent mutants. (`a >= b` for `a < b` shares its node and is ignored with it.)
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) =>
        /* Stryker disable EqualityOperator: equivalent, see above */ a < b
          ? -1
          : /* Stryker disable ConditionalExpression: equivalent, see above */ a > b
            ? 1
            : 0,
      );
    // Stryker restore EqualityOperator,ConditionalExpression
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  throw new Error(`canonicalJson: unsupported value of type ${typeof value}`);
}

/** Hex sha256 of bytes, or of a string's UTF-8 encoding. */
export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
