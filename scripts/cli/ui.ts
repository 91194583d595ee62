/** `operaflow ui [--port 8080] [--host 127.0.0.1]`: the dashboard server (ui/server.ts) until interrupted. */
import { createDb } from '../../db/client';
import { bindProblem, buildUi } from '../../ui/server';
import { UsageError, endpoints } from './connect';

export async function ui(flags: { port?: string; host?: string }): Promise<number> {
  const host = flags.host ?? '127.0.0.1';
  const port = Number(flags.port ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new UsageError(`ui: --port must be a port number, got "${flags.port}"`);
  const token = process.env.OPERAFLOW_UI_TOKEN || undefined;
  const problem = bindProblem(host, token);
  if (problem) throw new Error(problem);
  const db = createDb((await endpoints()).databaseUrl);
  const app = buildUi(db.db, { token });
  const address = await app.listen({ host, port });
  console.log(`operaflow ui at ${address}/api/runs${token ? ' (token required)' : ''}`);
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
  });
  await app.close();
  await db.close();
  return 0;
}
