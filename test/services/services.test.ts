/**
 * Service management is idempotent: with the services up (globalSetup brought them up), asking again
 * starts nothing and returns the same endpoints quickly, and `services:status` reports all healthy.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { withDatabase } from '../../db/admin';
import { ensureServices, servicesStatus } from '../../services';

const original = JSON.parse(process.env.OPERAFLOW_TEST_ORIGINAL_ENV ?? '{}') as {
  DATABASE_URL?: string;
  TEMPORAL_ADDRESS?: string;
  OPERAFLOW_S3_ENDPOINT?: string;
};
const testEnv = {
  DATABASE_URL: process.env.DATABASE_URL!,
  TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS!,
  OPERAFLOW_S3_ENDPOINT: process.env.OPERAFLOW_S3_ENDPOINT!,
};
const ENV_KEYS = ['DATABASE_URL', 'TEMPORAL_ADDRESS', 'OPERAFLOW_S3_ENDPOINT'] as const;
const testDatabase = new URL(testEnv.DATABASE_URL).pathname.slice(1);

/** Runs fn with the env the user started jest with, so local services are found the way `services:up` finds them. */
async function withUserEnv<T>(fn: () => Promise<T>): Promise<T> {
  for (const key of ENV_KEYS) {
    if (original[key] === undefined) delete process.env[key];
    else process.env[key] = original[key];
  }
  try {
    return await fn();
  } finally {
    Object.assign(process.env, testEnv);
  }
}

test('ensureServices when the services already run: same endpoints, nothing started, fast', async () => {
  const first = await withUserEnv(() => ensureServices({ database: testDatabase, s3: true }));
  const t0 = Date.now();
  const second = await withUserEnv(() => ensureServices({ database: testDatabase, s3: true }));
  const elapsed = Date.now() - t0;
  expect(second).toEqual(first);
  expect(second.started).toEqual({ postgres: false, temporal: false, s3: false });
  expect(withDatabase(second.databaseUrl, testDatabase)).toBe(new URL(testEnv.DATABASE_URL).toString());
  expect(second.temporalAddress).toBe(testEnv.TEMPORAL_ADDRESS);
  expect(second.s3Endpoint).toBe(testEnv.OPERAFLOW_S3_ENDPOINT);
  expect(elapsed).toBeLessThan(5_000);
});

test('ensureServices without s3 leaves S3 out', async () => {
  const s = await withUserEnv(() => ensureServices({ database: testDatabase, migrate: false }));
  expect(s.s3Endpoint).toBeUndefined();
  expect(s.started.s3).toBe(false);
});

test('servicesStatus reports every service healthy', async () => {
  const statuses = await withUserEnv(() => servicesStatus());
  expect(statuses.map((s) => [s.service, s.healthy])).toEqual([
    ['postgres', true],
    ['temporal', true],
    ['s3', true],
  ]);
});

test('`services:status` from the command line reports every service up', async () => {
  // Not `services:up` here: it marks the services as user-wanted, and teardown would then leave them running.
  const repo = path.resolve(__dirname, '..', '..');
  const env = { ...process.env };
  delete env.DATABASE_URL;
  delete env.TEMPORAL_ADDRESS;
  delete env.OPERAFLOW_S3_ENDPOINT;
  Object.assign(env, Object.fromEntries(Object.entries(original).filter(([, v]) => v !== undefined)));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [path.join(repo, 'node_modules', 'tsx', 'dist', 'cli.mjs'), 'scripts/services.ts', 'status'],
    { cwd: repo, env },
  );
  expect(stdout).toMatch(/^postgres\s+up\s/m);
  expect(stdout).toMatch(new RegExp(`^temporal\\s+up\\s.*${testEnv.TEMPORAL_ADDRESS.replace(/\./g, '\\.')}`, 'm'));
  expect(stdout).toMatch(new RegExp(`^s3\\s+up\\s.*${testEnv.OPERAFLOW_S3_ENDPOINT.replace(/\./g, '\\.')}`, 'm'));
});
