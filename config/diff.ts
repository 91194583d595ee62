/**
 * Comparing run configs key by key: the dashboard's config diff and `operaflow compare`'s variant labels
 * both read configs as `dotted.key → value` and ask which keys differ.
 */
import { canonicalJson } from '../util/canonical';

/** A config as `dotted.key → value` (lists are values, not expanded); keys in `skip` are left out. */
export function flattenConfig(
  config: Record<string, unknown>,
  skip: readonly string[] = [],
  prefix = '',
): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(config)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (skip.includes(key) || v === undefined) continue;
    if (v !== null && typeof v === 'object' && !Array.isArray(v))
      for (const [kk, vv] of flattenConfig(v as Record<string, unknown>, skip, key)) out.set(kk, vv);
    else out.set(key, v);
  }
  return out;
}

/** The keys, sorted, whose values are not the same in every flattened config (a missing key counts as null). */
export function differingKeys(flat: readonly Map<string, unknown>[]): string[] {
  const keys = [...new Set(flat.flatMap((f) => [...f.keys()]))].sort();
  return keys.filter((k) => new Set(flat.map((f) => canonicalJson(f.get(k) ?? null))).size > 1);
}
