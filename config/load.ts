/**
 * Reading a run config: YAML → `runConfigSchema` (config/schema.ts), with errors that name the file, the
 * 1-based line (from the YAML source) and the key path, e.g.
 * `configs/x.yaml:7: grpo.groupSize: Too small: expected number to be >=1`.
 */
import { readFileSync, statSync } from 'node:fs';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node } from 'yaml';
import { canonicalJson, sha256 } from '../util/canonical';
import { runConfigSchema, type RunConfig } from './schema';

export { runConfigSchema, type RunConfig, type RunConfigInput } from './schema';

type PathKey = string | number;

/**
 * Walk the YAML AST along a key path. Returns the deepest node reached, the key node of the last
 * map entry walked, and whether the whole path exists (a missing key stops at its parent).
 */
function locate(doc: Document, path: readonly PathKey[]): { node: Node | null; keyNode: Node | null; found: boolean } {
  let node: unknown = doc.contents;
  let keyNode: Node | null = null;
  for (const key of path) {
    if (isAlias(node)) node = node.resolve(doc); // `grpo: *base`: the keys live in the anchored node
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(key));
      if (!pair) return { node: node as Node, keyNode, found: false };
      keyNode = pair.key as Node;
      node = pair.value;
    } else if (
      isSeq(node) &&
      typeof key === 'number' &&
      /* Stryker disable ConditionalExpression: equivalent, zod reports only indexes the parsed list has, and it has the sequence's items */ node
        .items[key] !== undefined
    ) {
      // Stryker restore ConditionalExpression
      keyNode = null;
      node = node.items[key];
    } else
      return {
        node:
          /* Stryker disable LogicalOperator: equivalent, the walk ends here only at an empty document (null either way); zod never reports a path below a scalar */ (node as Node | null) ??
          null,
        /* Stryker restore LogicalOperator */ keyNode,
        found: false,
      };
  }
  return { node: (node as Node | null) ?? null, keyNode, found: true };
}

function lineOf(lc: LineCounter, node: Node | null | undefined): number | null {
  const start = node?.range?.[0];
  return start === undefined ? null : lc.linePos(start).line;
}

/**
 * A run config is a small file. These bounds keep a broken or hostile one (a 50 MB value, a YAML alias
 * bomb, 100 000 keys, 100 000 levels of nesting) from exhausting the CLI: each is an error naming the file.
 */
export const CONFIG_LIMITS = { bytes: 1 << 20, depth: 32, keys: 10_000, aliases: 100, reported: 20 } as const;

/** Nesting depth and number of keys of a parsed value, walked without recursion. */
function shape(value: unknown): { depth: number; keys: number } {
  let depth = 0;
  let keys = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    depth = Math.max(depth, d);
    const children = Array.isArray(v) ? v : Object.values(v);
    if (!Array.isArray(v)) keys += children.length;
    if (depth > CONFIG_LIMITS.depth || keys > CONFIG_LIMITS.keys) break;
    for (const c of children) stack.push([c, d + 1]);
  }
  return { depth, keys };
}

/** Parse and validate a YAML run config. `file` is used only in error messages. */
export function parseRunConfig(text: string, file: string): RunConfig {
  const bytes = Buffer.byteLength(text);
  if (bytes > CONFIG_LIMITS.bytes)
    throw new Error(`${file}: the config has ${bytes} bytes; a run config may have at most ${CONFIG_LIMITS.bytes}`);
  const lc = new LineCounter();
  let doc: Document;
  let raw: unknown;
  try {
    doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
    const yamlError = doc.errors[0];
    if (yamlError) {
      if (/call stack/i.test(yamlError.message)) throw new RangeError(yamlError.message);
      const line = yamlError.linePos?.[0].line ?? lc.linePos(yamlError.pos[0]).line;
      throw new Error(`${file}:${line}: invalid YAML: ${yamlError.message.split('\n')[0]}`);
    }
    raw = doc.toJS({ maxAliasCount: CONFIG_LIMITS.aliases }) ?? {};
  } catch (err) {
    if (err instanceof RangeError)
      throw new Error(
        `${file}: invalid YAML: it nests too deeply to read (a run config nests at most ${CONFIG_LIMITS.depth} levels)`,
      );
    if (/alias count/i.test((err as Error).message))
      throw new Error(
        `${file}: invalid YAML: aliases expand too much (more than ${CONFIG_LIMITS.aliases} expansions; an alias bomb?)`,
      );
    throw err;
  }
  const { depth, keys } = shape(raw);
  if (depth > CONFIG_LIMITS.depth)
    throw new Error(
      `${file}: the config nests ${depth} or more levels deep; a run config nests at most ${CONFIG_LIMITS.depth}`,
    );
  if (keys > CONFIG_LIMITS.keys) throw new Error(`${file}: the config has more than ${CONFIG_LIMITS.keys} keys`);
  const result = runConfigSchema.safeParse(raw);
  if (result.success) return result.data;

  const lines = result.error.issues.map((issue) => {
    // Stryker disable next-line ConditionalExpression: equivalent, this schema's paths hold only string keys and indexes (the filter narrows the type)
    const path = issue.path.filter((k): k is PathKey => typeof k !== 'symbol');
    // zod reports unknown keys on the parent object: name each key itself, at its own line.
    if (issue.code === 'unrecognized_keys') {
      return (
        issue.keys
          .slice(0, CONFIG_LIMITS.reported)
          .map((key) => {
            const { keyNode } = locate(doc, [...path, key]);
            const line = lineOf(lc, keyNode);
            return `${file}${line ? `:${line}` : ''}: ${[...path, key].join('.')}: unknown key`;
          })
          // Located one by one (each a walk of the document): past the first few, only counted.
          .concat(
            issue.keys.slice(CONFIG_LIMITS.reported).map((key) => `${file}: ${[...path, key].join('.')}: unknown key`),
          )
          .join('\n')
      );
    }
    const { node, keyNode, found } = locate(doc, path);
    // A missing key has no node of its own: `locate` stops at its parent, which we point at.
    // An empty value (`groupSize:`) parses to a null node: point at its key instead.
    const line = lineOf(lc, node ?? keyNode);
    // A path that is not in the YAML is a required key that was left out, which zod reports as
    // invalid_type (defaults fill every other absent key, and aliases are followed), so testing the code
    // is defensive: making it always true is an equivalent mutant. (The directive also covers the other
    // ConditionalExpression mutants of this `&&`, which start at the same place.)
    const missing =
      /* Stryker disable ConditionalExpression: equivalent, see above */ issue.code === 'invalid_type' &&
      /* Stryker restore ConditionalExpression */ !found;
    const message = missing ? 'required key is missing' : issue.message;
    return `${file}${line ? `:${line}` : ''}: ${path.length ? path.join('.') : '(root)'}: ${message}`;
  });
  const all = lines.flatMap((l) => l.split('\n'));
  const more = all.length - CONFIG_LIMITS.reported;
  throw new Error(
    [...all.slice(0, CONFIG_LIMITS.reported), ...(more > 0 ? [`${file}: … and ${more} more problem(s)`] : [])].join(
      '\n',
    ),
  );
}

export function loadRunConfig(path: string): RunConfig {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > CONFIG_LIMITS.bytes)
      throw new Error(`it has ${size} bytes; a run config may have at most ${CONFIG_LIMITS.bytes}`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read run config: ${(err as Error).message}`);
  }
  return parseRunConfig(text, path);
}

/** sha256 of the canonical JSON (sorted keys) of the parsed config, defaults included. */
export function configHash(config: RunConfig): string {
  return sha256(canonicalJson(config));
}
