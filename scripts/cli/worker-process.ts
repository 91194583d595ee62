/**
 * A worker as a child process of a long command (`npm start`, `npm run experiment`): started, awaited
 * until it polls its queues, stopped gracefully (SIGTERM, then SIGKILL after 20 s).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '..', '..');
/** `node --import tsx scripts/operaflow.ts`: the CLI, run by this Node without npx in between. */
export const CLI = ['--import', 'tsx', join(ROOT, 'scripts', 'operaflow.ts')];

export function startWorker(env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...CLI, 'worker'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise((resolveReady, reject) => {
    const onData = (d: Buffer) => {
      output += d.toString();
      if (output.includes(' polling ')) {
        child.stdout!.off('data', onData);
        // From here on the worker's own lines (warnings, stage attempts) go to a log file's worth of stderr only when asked.
        if (process.env.OPERAFLOW_VERBOSE) {
          child.stdout!.pipe(process.stderr);
          child.stderr!.pipe(process.stderr);
        } else {
          child.stdout!.resume();
          child.stderr!.resume();
        }
        resolveReady(child);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    child.on('exit', (code) => reject(new Error(`the worker exited (${code}) before it started polling:\n${output}`)));
  });
}

export function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    child.kill('SIGTERM');
  });
}
