/**
 * What a run may make a worker touch. Temporal has no authentication, so anyone who reaches it can start
 * a run, and the run's config names paths the worker then reads (data, model, tokenizer, teacher) and
 * writes (the artifact store). A worker takes those paths only under its own roots
 * (OPERAFLOW_WORKER_ROOTS; default: the checkout it runs from and the temp directory), resolved through
 * symbolic links; anything else fails the stage, naming the key, before a byte is read or written.
 */
import { existsSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import type { RunConfig } from '../config/schema';
import { isS3, uriToPath } from './store';

const CHECKOUT = resolve(__dirname, '..');

/** The worker's roots, real paths. */
export function workerRoots(env: NodeJS.ProcessEnv = process.env): string[] {
  const listed = env.OPERAFLOW_WORKER_ROOTS?.split(':').filter(Boolean) ?? [CHECKOUT, tmpdir()];
  return listed.map((p) => real(resolve(p)));
}

/** The real path of `p`, or of its nearest existing ancestor joined with the rest (a store not made yet). */
function real(p: string): string {
  let existing = p;
  while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
  return resolve(realpathSync(existing), relative(existing, p));
}

const inside = (root: string, p: string) => {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
};

/** The paths of a run config a worker reads or writes, by key. */
function runPaths(config: RunConfig): [string, string][] {
  const paths: [string, string | undefined][] = [
    // An object store is bounded by the worker's credentials, not its file system.
    ['runtime.artifacts', isS3(config.runtime.artifacts) ? undefined : config.runtime.artifacts],
    ['data.source', config.data.source === 'synthetic' ? undefined : config.data.source],
    ['model.checkpoint', config.model.checkpoint],
    ['model.tokenizer', config.model.tokenizer === 'byte' ? undefined : config.model.tokenizer],
    ['coldStart.teacher.checkpoint', config.coldStart.teacher.checkpoint],
  ];
  return paths.filter((e): e is [string, string] => e[1] !== undefined);
}

/** The keys of `config` that name a path outside the worker's roots (empty: the run may proceed). */
export function pathsOutsideRoots(config: RunConfig, roots: string[] = workerRoots()): string[] {
  return runPaths(config)
    .filter(([, p]) => !roots.some((root) => inside(root, real(uriToPath(p)))))
    .map(([key, p]) => `${key} (${p})`);
}
