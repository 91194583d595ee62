/**
 * `npm start`: the README's main job. Brings up the local services (PostgreSQL + Temporal, or the ones
 * DATABASE_URL / TEMPORAL_ADDRESS point at), starts a worker process and the dashboard (its URL is
 * printed), runs `operaflow train configs/demo.yaml --wait` (which shows progress and prints the
 * evaluation before vs after RL), then stops the worker. In a terminal the dashboard stays up until
 * Ctrl-C; otherwise (scripts, CI) it stops too. Exits with the train command's status.
 *
 *   npm start [-- <config.yaml>]      (default configs/demo.yaml)
 */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { ensureServices } from '../services';
import { checkEnvironment } from '../util/env';
import { startUi, type RunningUi } from './cli/ui';
import { CLI, startWorker, stopWorker } from './cli/worker-process';

const ROOT = resolve(__dirname, '..');

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
