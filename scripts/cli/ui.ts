/**
 * `operaflow ui [--port 8080] [--host 127.0.0.1] [--allow-actions]`: the dashboard (ui/server.ts) until
 * interrupted. Read-only unless --allow-actions, which adds pause / resume / cancel / retry buttons
 * (the same operations as the CLI's, recorded as events by `ui@<address>`).
 */
import type { FastifyInstance } from 'fastify';
import { createDb, type DbHandle } from '../../db/client';
import { bindProblem, buildUi } from '../../ui/server';
import { UsageError, connect, endpoints, type Services } from './connect';
import { controlRun } from './control';

export interface UiFlags {
  port?: string;
  host?: string;
  'allow-actions'?: boolean;
}

export interface RunningUi {
  /** The address of the runs page. */
  url: string;
  close(): Promise<void>;
}

/** Starts the dashboard and returns its address (also used by `npm start`). */
export async function startUi(flags: UiFlags): Promise<RunningUi> {
  const host = flags.host ?? '127.0.0.1';
  const port = Number(flags.port ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new UsageError(`ui: --port must be a port number, got "${flags.port}"`);
  const token = process.env.OPERAFLOW_UI_TOKEN || undefined;
  const problem = bindProblem(host, token);
  if (problem) throw new Error(problem);
  let services: Services | undefined;
  let db: DbHandle;
  if (flags['allow-actions']) {
    services = await connect();
    db = services.db;
  } else db = createDb((await endpoints()).databaseUrl);
  const s = services;
  let app: FastifyInstance;
  try {
    app = buildUi(db.db, { token, act: s && ((action, runId, who) => controlRun(s, action, runId, who)) });
    const address = await app.listen({ host, port });
    return {
      url: `${address}/`,
      async close() {
        await app.close();
        await (services ? services.close() : db.close());
      },
    };
  } catch (err) {
    await (services ? services.close() : db.close());
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE')
      throw new Error(`ui: port ${port} on ${host} is taken: choose another with --port`, { cause: err });
    throw err;
  }
}

export async function ui(flags: UiFlags): Promise<number> {
  const running = await startUi(flags);
  const mode = flags['allow-actions'] ? 'operator actions enabled' : 'read-only';
  const auth = process.env.OPERAFLOW_UI_TOKEN ? '; token required: open it once with ?token=<token>' : '';
  console.log(`operaflow ui at ${running.url} (${mode}${auth}); Ctrl-C stops it`);
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
  });
  await running.close();
  return 0;
}
