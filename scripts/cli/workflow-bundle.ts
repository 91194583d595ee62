/**
 * The worker's workflow bundle, built once per version of the workflow code instead of at every worker
 * start (webpack takes about 2 s of CPU, which a restarted worker would take from the running ones).
 * Cached under ~/.cache/operaflow/workflow-bundles/, keyed by the sha256 of workflows/*.ts and the SDK
 * version (the workflows import nothing else at run time), and checked against its recorded sha256.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../../util/cache-dir';
import { sha256 } from '../../util/canonical';
import { writeFileAtomic } from '../../util/files';
import { ROOT } from './connect';

const WORKFLOWS = join(ROOT, 'workflows');

function bundleKey(): string {
  const sources = readdirSync(WORKFLOWS)
    .filter((f) => f.endsWith('.ts'))
    .sort()
    .map((f) => `${f}\n${readFileSync(join(WORKFLOWS, f), 'utf8')}`);
  const sdk = ['worker', 'workflow'].map(
    (p) => (require(`@temporalio/${p}/package.json`) as { version: string }).version,
  );
  return sha256([...sdk, ...sources].join('\0')).slice(0, 32);
}

/** `{ code }` for Worker.create's `workflowBundle`: from the cache when intact, else bundled and cached. */
export async function workflowBundle(log: (line: string) => void): Promise<{ code: string }> {
  const dir = join(cacheDir(), 'workflow-bundles');
  const key = bundleKey();
  const [codePath, hashPath] = [join(dir, `${key}.js`), join(dir, `${key}.sha256`)];
  try {
    const code = readFileSync(codePath);
    if (sha256(code) === readFileSync(hashPath, 'utf8').trim()) return { code: code.toString('utf8') };
    log(`workflow bundle ${codePath} does not match its sha256: rebuilding it`);
  } catch {
    // not built yet for this code
  }
  const { bundleWorkflowCode } = await import('@temporalio/worker');
  const { code } = await bundleWorkflowCode({ workflowsPath: join(WORKFLOWS, 'index.ts') });
  const bytes = Buffer.from(code, 'utf8');
  await writeFileAtomic(codePath, bytes);
  await writeFileAtomic(hashPath, Buffer.from(sha256(bytes)));
  return { code };
}
