/** What every CLI command that talks to a run needs: the database and a Temporal client, from DATABASE_URL / TEMPORAL_ADDRESS or the local services. */
import { execFileSync } from 'node:child_process';
import { hostname, userInfo } from 'node:os';
import { resolve } from 'node:path';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import { createDb, type DbHandle } from '../../db/client';
import { ensureServices } from '../../services';

export const ROOT = resolve(__dirname, '..', '..');

/** A usage mistake: printed with the usage text, exit 64. */
export class UsageError extends Error {}

export interface Services {
  db: DbHandle;
  client: Client;
  temporalAddress: string;
  close(): Promise<void>;
}

export async function endpoints(): Promise<{ databaseUrl: string; temporalAddress: string }> {
  return ensureServices({ log: (line) => console.error(line) });
}

export async function connect(): Promise<Services> {
  const { databaseUrl, temporalAddress } = await endpoints();
  const db = createDb(databaseUrl);
  const connection = await Connection.connect({ address: temporalAddress });
  return {
    db,
    client: new Client({ connection }),
    temporalAddress,
    async close() {
      await connection.close();
      await db.close();
    },
  };
}

/** Who issued a command, for the audit trail (events.actor). */
export function actor(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `cli@${hostname()}`;
  }
}

/** The code a run was started from: the git commit, or the package version outside a checkout. */
export function codeVersion(): string {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return `v${(require('../../package.json') as { version: string }).version}`;
  }
}

export async function workflowRunning(s: Services, runId: string): Promise<boolean> {
  try {
    return (await s.client.workflow.getHandle(runId).describe()).status.name === 'RUNNING';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/** Writes a line to stdout and resolves once it is flushed: `process.exit` right after `console.log` truncates piped output. */
export function printOut(text: string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(`${text}\n`, (err) => (err ? reject(err) : resolve())));
}
