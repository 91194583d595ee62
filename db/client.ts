/**
 * Database connection: `createDb()` returns a drizzle handle over a pg Pool for DATABASE_URL.
 * Connections open lazily, so connection failures surface on the first query; they are rewritten
 * into messages that say what to do (start the services, fix the URL) instead of a bare ECONNREFUSED.
 * Entry points that want to fail fast call `connectDb()`, which also runs a `select 1`.
 */
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import * as schema from './schema';

export type Db = NodePgDatabase<typeof schema>;
export interface DbHandle {
  db: Db;
  pool: pg.Pool;
  /** Ends every pooled connection; safe to call twice. */
  close(): Promise<void>;
}

const START_HINT =
  'Start the local services with `npm run services:up` (it prints the DATABASE_URL to use), or set DATABASE_URL to a running PostgreSQL server.';

/** The URL with its password replaced, for error messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable DATABASE_URL>';
  }
}

/** Turns a pg connection error into one that names the server and the fix; other errors pass through. */
export function explainConnectionError(err: unknown, url: string): Error {
  // Duck-typed, not instanceof: Node's socket errors come from another realm under jest's vm sandbox.
  if (typeof err !== 'object' || err === null || typeof (err as Error).message !== 'string')
    return new Error(String(err));
  const code = (err as { code?: string }).code;
  const where = redactUrl(url);
  let message: string | undefined;
  if (
    code === 'ECONNREFUSED' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN' ||
    code === 'ETIMEDOUT' ||
    code === 'EHOSTUNREACH'
  ) {
    message = `PostgreSQL is not reachable at ${where} (${code}). ${START_HINT}`;
  } else if (code === '3D000') {
    message = `PostgreSQL at ${where}: ${(err as Error).message}. Run \`npm run services:up\` (creates the database and applies migrations), or create it yourself.`;
  } else if (code === '28P01' || code === '28000') {
    message = `PostgreSQL at ${where} rejected the credentials: ${(err as Error).message}. Check the user and password in DATABASE_URL.`;
  } else if (/timeout|Connection terminated/i.test((err as Error).message)) {
    message = `PostgreSQL at ${where} did not answer: ${(err as Error).message}. ${START_HINT}`;
  }
  if (!message) return err as Error;
  const explained = new Error(message, { cause: err }) as Error & { code?: string };
  explained.code = code;
  return explained;
}

export function requireDatabaseUrl(url: string | undefined = process.env.DATABASE_URL): string {
  if (!url) throw new Error(`DATABASE_URL is not set. ${START_HINT}`);
  return url;
}

/**
 * pg.Client whose connect errors are explained. pg-pool connects with a callback and `pool.connect()`
 * callers use the promise form, so both forms are wrapped.
 */
function explainingClient(url: string): new () => pg.ClientBase {
  class ExplainingClient extends pg.Client {
    override connect(): Promise<pg.Client>;
    override connect(callback: (err: Error | null, client?: pg.Client) => void): void;
    override connect(callback?: (err: Error | null, client?: pg.Client) => void): Promise<pg.Client> | void {
      if (callback) {
        return super.connect(((err: Error | null) => callback(err ? explainConnectionError(err, url) : null, this)) as (
          err: Error,
        ) => void);
      }
      return super.connect().catch((err: unknown) => {
        throw explainConnectionError(err, url);
      });
    }
  }
  // @types/pg declares the pool's Client option as zero-argument; pg-pool passes the pool options.
  return ExplainingClient as unknown as new () => pg.ClientBase;
}

export function createDb(url: string | undefined = process.env.DATABASE_URL, options: { max?: number } = {}): DbHandle {
  const connectionString = requireDatabaseUrl(url);
  const pool = new pg.Pool({
    connectionString,
    Client: explainingClient(connectionString),
    max: options.max ?? 10,
    connectionTimeoutMillis: 10_000,
  });
  // An idle client losing its server (e.g. services:down while a worker idles) emits 'error' on the
  // pool; unhandled, that would crash the process. The next query reconnects or reports the failure.
  pool.on('error', (err) => console.warn(`PostgreSQL connection dropped: ${err.message}`));
  let closed: Promise<void> | undefined;
  return {
    db: drizzle(pool, { schema }),
    pool,
    close: () => (closed ??= pool.end()),
  };
}

/** createDb plus a round trip, so a wrong or down DATABASE_URL fails here with a clear message. */
export async function connectDb(
  url: string | undefined = process.env.DATABASE_URL,
  options: { max?: number } = {},
): Promise<DbHandle> {
  const handle = createDb(url, options);
  try {
    await handle.pool.query('select 1');
  } catch (err) {
    await handle.close();
    throw err;
  }
  return handle;
}
