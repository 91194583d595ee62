/**
 * `npm start`: the README's main job. Brings up the local services (PostgreSQL + Temporal, or the ones
 * DATABASE_URL / TEMPORAL_ADDRESS point at), starts a worker process and the dashboard (its URL is
 * printed), runs `operaflow train configs/demo.yaml --wait` (which shows progress and prints the
 * evaluation before vs after RL), then stops the worker. In a terminal the dashboard stays up until
 * Ctrl-C; otherwise (scripts, CI) it stops too. Exits with the train command's status.
 *
 *   npm start [-- <config.yaml>]      (default configs/demo.yaml)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { ensureServices } from '../services';
import { checkEnvironment } from '../util/env';
import { startUi, type RunningUi } from './cli/ui';

const ROOT = resolve(__dirname, '..');
const CLI = ['--import', 'tsx', join(ROOT, 'scripts', 'operaflow.ts')];

function startWorker(env: NodeJS.ProcessEnv): Promise<ChildProcess> {
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

function stopWorker(child: ChildProcess): Promise<void> {
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

/** The dashboard on 127.0.0.1: OPERAFLOW_UI_PORT, else 8080, else (8080 taken) any free port. */
async function startDashboard(env: NodeJS.ProcessEnv): Promise<RunningUi> {
  // startUi reads the services from the environment, as every command does.
  Object.assign(process.env, { DATABASE_URL: env.DATABASE_URL, TEMPORAL_ADDRESS: env.TEMPORAL_ADDRESS });
  const port = process.env.OPERAFLOW_UI_PORT;
  try {
    return await startUi({ port: port ?? '8080' });
  } catch (err) {
    if (port !== undefined || !/is taken/.test((err as Error).message)) throw err;
    return startUi({ port: '0' });
  }
}

async function main(): Promise<void> {
  checkEnvironment();
  const config = process.argv[2] ?? join('configs', 'demo.yaml');
  const t0 = Date.now();
  console.log('operaflow: starting services (PostgreSQL, Temporal)…');
  const services = await ensureServices({ log: (line) => console.log(`  ${line}`) });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: services.databaseUrl,
    TEMPORAL_ADDRESS: services.temporalAddress,
  };
  console.log(
    `  PostgreSQL ${services.databaseUrl.replace(/:[^:@/]*@/, ':***@')}\n  Temporal   ${services.temporalAddress}`,
  );

  const dashboard = await startDashboard(env);
  console.log(`operaflow: dashboard at ${dashboard.url} (live curves, stage timeline, samples)`);

  console.log('operaflow: starting a worker (task queues rollout, train)…');
  const worker = await startWorker(env);
  const stop = () => {
    void stopWorker(worker).then(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);

  console.log(`operaflow: operaflow train ${config} --wait`);
  const code = await new Promise<number>((done, reject) => {
    const train = spawn(process.execPath, [...CLI, 'train', config, '--wait'], { cwd: ROOT, env, stdio: 'inherit' });
    train.on('error', reject);
    train.on('exit', (c, signal) => done(c ?? (signal ? 1 : 0)));
  });
  await stopWorker(worker);
  console.log(
    `operaflow: ${code === 0 ? 'done' : `train exited with status ${code}`} in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
  );
  console.log('  inspect: npm run operaflow -- runs | show <run> ; services stay up until `npm run services:down`');
  if (process.stdout.isTTY) {
    console.log(`operaflow: the dashboard stays up at ${dashboard.url}; Ctrl-C stops it`);
    await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  }
  await dashboard.close();
  process.exit(code);
}

main().catch((err: Error) => {
  console.error(err.message);
  process.exit(1);
});
