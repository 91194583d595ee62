/**
 * Applies the committed drizzle-kit migrations (db/migrations/). Idempotent: applied migrations are
 * recorded in drizzle.__drizzle_migrations and skipped. Workers, `services:up` and tests may call it at
 * the same moment, and drizzle's own bookkeeping is not safe against that (two sessions both see a
 * migration as pending), so it runs under a PostgreSQL advisory lock held on one dedicated connection.
 *
 * CLI: `tsx db/migrate.ts` migrates DATABASE_URL.
 */
import path from 'node:path';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';
import { explainConnectionError, redactUrl, requireDatabaseUrl } from './client';

export const MIGRATIONS_FOLDER = path.join(__dirname, 'migrations');
/** Arbitrary constant shared by every operaflow process: the key of the migration advisory lock. */
const MIGRATION_LOCK_KEY = 0x6f70_6572; // "oper"

export async function migrateDb(url: string | undefined = process.env.DATABASE_URL): Promise<void> {
  const connectionString = requireDatabaseUrl(url);
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
  } catch (err) {
    throw explainConnectionError(err, connectionString);
  }
  try {
    // Session-level lock: released by the unlock below or, if this process dies, by the server.
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      // drizzle logs "schema already exists, skipping" NOTICEs; they are expected on every re-run.
      client.on('notice', () => {});
      await migrate(drizzle(client), { migrationsFolder: MIGRATIONS_FOLDER });
    } finally {
      await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } catch (err) {
    const message = (err as Error | undefined)?.message ?? String(err);
    throw new Error(`Migrating ${redactUrl(connectionString)} failed: ${message}`, { cause: err });
  } finally {
    await client.end();
  }
}

async function main(): Promise<void> {
  await migrateDb();
  console.log(`Migrations applied to ${redactUrl(requireDatabaseUrl())}`);
}

if (require.main === module) {
  main().catch((err: Error) => {
    console.error(err.message);
    process.exit(1);
  });
}
