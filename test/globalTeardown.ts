/**
 * Jest global teardown: drops this run's test database and stops the services that globalSetup
 * started — unless another test run in this checkout is still using them, `npm run services:up` was
 * run meanwhile, or OPERAFLOW_KEEP_SERVICES=1 (faster repeated runs). Services that were already running before the tests are left alone.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { withDatabase } from '../db/admin';
import { servicesKept, stopServices } from '../services';
import { isPidAlive } from '../services/process';
import { testRunsDir } from './globalSetup';

export default async function globalTeardown(): Promise<void> {
  const state = globalThis.__operaflowTestServices;
  if (!state) return;
  const log = (line: string) => process.stderr.write(`[services] ${line}\n`);
  const client = new pg.Client({ connectionString: withDatabase(state.databaseUrl, 'postgres') });
  try {
    await client.connect();
    await client.query(`drop database if exists "${new URL(state.databaseUrl).pathname.slice(1)}" with (force)`);
  } catch (err) {
    log(`could not drop the test database: ${(err as Error).message}`);
  } finally {
    await client.end().catch(() => {});
  }
  fs.rmSync(state.marker, { force: true });
  if (!state.started.postgres && !state.started.temporal && !state.started.s3) return;
  // Kept: OPERAFLOW_KEEP_SERVICES=1 (faster repeated runs) or someone ran `services:up` meanwhile.
  if (process.env.OPERAFLOW_KEEP_SERVICES === '1' || servicesKept()) return;
  const others = fs.readdirSync(testRunsDir()).filter((name) => {
    const pid = Number.parseInt(name, 10);
    if (pid && isPidAlive(pid)) return true;
    fs.rmSync(path.join(testRunsDir(), name), { force: true });
    return false;
  });
  if (others.length) {
    log(`leaving services running: test run(s) ${others.join(', ')} still use them`);
    return;
  }
  // stopServices skips whatever DATABASE_URL / TEMPORAL_ADDRESS / OPERAFLOW_S3_ENDPOINT name; restore the env the user gave.
  for (const key of ['DATABASE_URL', 'TEMPORAL_ADDRESS', 'OPERAFLOW_S3_ENDPOINT'] as const) {
    const value = state.originalEnv[key];
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  await stopServices({
    log,
    postgres: state.started.postgres,
    temporal: state.started.temporal,
    s3: state.started.s3,
  });
}
