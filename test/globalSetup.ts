/**
 * Jest global setup: the tests run against real PostgreSQL, Temporal and S3 (moto), brought up by the
 * same code as `npm run services:up` (reused when already running, started otherwise). Each test run gets its
 * own freshly migrated database, `operaflow_test_<pid>`, so tests never touch user data and two test
 * runs at once (several checkouts or terminals) cannot drop each other's tables. Jest starts its
 * workers after this function, so the env vars set here reach every test file.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { migrateDb } from '../db/migrate';
import { withDatabase } from '../db/admin';
import { ensureServices, useServices, type ServiceEndpoints } from '../services';
import { stateDir } from '../services/paths';
import { isPidAlive } from '../services/process';

export interface TestServicesState {
  started: ServiceEndpoints['started'];
  /** Env as it was before setup replaced DATABASE_URL / TEMPORAL_ADDRESS / OPERAFLOW_S3_ENDPOINT: decides what teardown may stop. */
  originalEnv: { DATABASE_URL?: string; TEMPORAL_ADDRESS?: string; OPERAFLOW_S3_ENDPOINT?: string };
  databaseUrl: string;
  marker: string;
}

declare global {
  // Shared with globalTeardown, which runs in the same process.
  var __operaflowTestServices: TestServicesState | undefined;
}

export const TEST_DB_PREFIX = 'operaflow_test_';

/** Registers this run in .operaflow/test-runs/ so a concurrent run's teardown keeps the services up. */
export function testRunsDir(): string {
  const dir = path.join(stateDir(), 'test-runs');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Drops test databases of runs whose process is gone (a crashed or killed jest leaves them behind). */
async function dropStaleTestDatabases(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
  await client.connect();
  try {
    const { rows } = await client.query<{ datname: string }>(
      "select datname from pg_database where datname like 'operaflow\\_test\\_%'",
    );
    for (const { datname } of rows) {
      const pid = Number.parseInt(datname.slice(TEST_DB_PREFIX.length), 10);
      if (pid && !isPidAlive(pid)) await client.query(`drop database if exists "${datname}" with (force)`);
    }
  } finally {
    await client.end();
  }
}

export default async function globalSetup(): Promise<void> {
  const t0 = Date.now();
  const log = (line: string) => process.stderr.write(`[services] ${line}\n`);
  const originalEnv = {
    DATABASE_URL: process.env.DATABASE_URL,
    TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS,
    OPERAFLOW_S3_ENDPOINT: process.env.OPERAFLOW_S3_ENDPOINT,
  };
  const services = await ensureServices({ log, migrate: false, s3: true });
  const databaseUrl = withDatabase(services.databaseUrl, `${TEST_DB_PREFIX}${process.pid}`);
  // Only on our own local server: pids in database names mean nothing on a server other machines share.
  if (!originalEnv.DATABASE_URL) await dropStaleTestDatabases(databaseUrl);
  const client = new pg.Client({ connectionString: withDatabase(databaseUrl, 'postgres') });
  await client.connect();
  try {
    const name = new URL(databaseUrl).pathname.slice(1);
    await client.query(`drop database if exists "${name}" with (force)`);
    await client.query(`create database "${name}"`);
  } catch (err) {
    const hint = originalEnv.DATABASE_URL
      ? ' The tests create their own database: DATABASE_URL needs a role allowed to CREATE DATABASE, or unset it to use a local server.'
      : '';
    throw new Error(`Could not create the test database: ${(err as Error).message}.${hint}`, { cause: err });
  } finally {
    await client.end();
  }
  await migrateDb(databaseUrl);
  const marker = path.join(testRunsDir(), String(process.pid));
  fs.writeFileSync(marker, databaseUrl);
  useServices({ ...services, databaseUrl }); // this run's own database on the server
  // For tests that exercise service management itself (test/db/services.test.ts).
  process.env.OPERAFLOW_TEST_ORIGINAL_ENV = JSON.stringify(originalEnv);
  globalThis.__operaflowTestServices = { started: services.started, originalEnv, databaseUrl, marker };
  log(
    `ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: DATABASE_URL=${databaseUrl} TEMPORAL_ADDRESS=${services.temporalAddress} OPERAFLOW_S3_ENDPOINT=${services.s3Endpoint}`,
  );
}
