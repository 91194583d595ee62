/**
 * Databases on a server: the URL of another database on the same server, and creating or recreating one
 * (through the maintenance database `postgres`). The local server, the external one and the tests use these.
 */
import pg from 'pg';

export function databaseName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  // Interpolated into CREATE/DROP DATABASE (identifiers cannot be bound parameters), so keep it plain.
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
    throw new Error(`Database name "${name}" in the URL must match [A-Za-z_][A-Za-z0-9_]*.`);
  return name;
}

/** The same server URL pointing at another database. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function onMaintenanceDb<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: withDatabase(url, 'postgres'), connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates the URL's database if missing; concurrent callers are fine. Returns whether it created it. */
export async function ensureDatabase(url: string): Promise<boolean> {
  const name = databaseName(url);
  return onMaintenanceDb(url, async (client) => {
    const exists = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (exists.rowCount) return false;
    try {
      await client.query(`create database "${name}"`);
      return true;
    } catch (err) {
      // 42P04 duplicate_database / 23505: another process created it between the check and here.
      const code = (err as { code?: string }).code;
      if (code === '42P04' || code === '23505') return false;
      throw err;
    }
  });
}

/** Drops (terminating its sessions) and recreates the URL's database: a clean slate for tests. */
export async function recreateDatabase(url: string): Promise<void> {
  const name = databaseName(url);
  if (name === 'postgres') throw new Error('Refusing to drop the maintenance database "postgres".');
  await onMaintenanceDb(url, async (client) => {
    await client.query(`drop database if exists "${name}" with (force)`);
    await client.query(`create database "${name}"`);
  });
}
