/** Migrations are applied by every worker, `services:up` and test run: re-running them, even concurrently, must be harmless. */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { MIGRATIONS_FOLDER, migrateDb } from '../../db/migrate';
import { recreateDatabase, withDatabase } from '../../db/admin';

const url = withDatabase(
  process.env.DATABASE_URL!,
  `${new URL(process.env.DATABASE_URL!).pathname.slice(1)}_migrations`,
);

async function query<T extends pg.QueryResultRow>(sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

beforeAll(() => recreateDatabase(url));
afterAll(async () => {
  const client = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
  await client.connect();
  await client.query(`drop database if exists "${new URL(url).pathname.slice(1)}" with (force)`);
  await client.end();
});

test('migrations create every table, and applying them again (also concurrently) changes nothing', async () => {
  await Promise.all([migrateDb(url), migrateDb(url), migrateDb(url)]);
  await migrateDb(url);

  const tables = await query<{ table_name: string }>(
    "select table_name from information_schema.tables where table_schema = 'public' order by table_name",
  );
  expect(tables.map((t) => t.table_name)).toEqual([
    'artifacts',
    'events',
    'metrics',
    'runs',
    'samples',
    'stage_attempts',
  ]);

  const journal = JSON.parse(fs.readFileSync(path.join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8')) as {
    entries: unknown[];
  };
  const applied = await query<{ n: string }>('select count(*) as n from drizzle.__drizzle_migrations');
  expect(Number(applied[0]?.n)).toBe(journal.entries.length);
});

test('a missing or unreachable database fails with a message that says what to do', async () => {
  await expect(migrateDb('')).rejects.toThrow(/DATABASE_URL is not set.*npm run services:up/);
  await expect(migrateDb('postgres://postgres@127.0.0.1:1/none')).rejects.toThrow(
    /not reachable at postgres:\/\/postgres@127\.0\.0\.1:1\/none.*npm run services:up/,
  );
});
