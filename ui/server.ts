/**
 * The dashboard's server: the run database as JSON under `/api/…` (runs, one run's summary, its metric
 * curves, its stage timeline, its samples), for the pages and for scripts. Read-only. Bound to loopback
 * unless a token (OPERAFLOW_UI_TOKEN) guards it: then every request must carry it
 * (`Authorization: Bearer <token>`), since run configs, prompts and generations are not for everyone.
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Db } from '../db/client';
import { getRun, listRuns, listSamples, listStageAttempts, metricSeries, runSummary } from '../db/queries';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Refuses to serve beyond this machine without a token: the API shows configs, prompts and generations. */
export function bindProblem(host: string, token: string | undefined): string | undefined {
  if (LOOPBACK.has(host) || token) return undefined;
  return `ui: binding to ${host} exposes every run beyond this machine: set OPERAFLOW_UI_TOKEN (clients then send "Authorization: Bearer <token>"), or bind to 127.0.0.1`;
}

const sameToken = (given: string, token: string) =>
  given.length === token.length && timingSafeEqual(Buffer.from(given), Buffer.from(token));

export function buildUi(db: Db, options: { token?: string } = {}): FastifyInstance {
  const app = Fastify({ logger: false });
  if (options.token) {
    const token = options.token;
    app.addHook('onRequest', async (req, reply) => {
      const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
      if (!sameToken(given, token)) await reply.code(401).send({ error: 'missing or wrong token' });
    });
  }
  const known = async (id: string) => (await getRun(db, id)) !== undefined;
  const notFound = (id: string) => ({ error: `no run with id "${id}"` });

  app.get('/api/runs', async () =>
    (await listRuns(db, 500)).map((r) => ({
      id: r.id,
      name: r.name,
      status: r.status,
      currentIteration: r.currentIteration,
      iterations: (r.config as { grpo?: { iterations?: number } }).grpo?.iterations ?? null,
      configHash: r.configHash,
      codeVersion: r.codeVersion,
      createdAt: r.createdAt,
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
      evalBefore: (r.summary as { evalBefore?: unknown } | null)?.evalBefore ?? null,
      evalAfter: (r.summary as { evalAfter?: unknown } | null)?.evalAfter ?? null,
    })),
  );
  app.get<{ Params: { id: string } }>('/api/runs/:id', async (req, reply) =>
    (await known(req.params.id)) ? runSummary(db, req.params.id) : reply.code(404).send(notFound(req.params.id)),
  );
  // Curves: name → [[step, value], …] in step order.
  app.get<{ Params: { id: string } }>('/api/runs/:id/metrics', async (req, reply) => {
    if (!(await known(req.params.id))) return reply.code(404).send(notFound(req.params.id));
    const curves: Record<string, [number, number][]> = {};
    for (const m of await metricSeries(db, req.params.id)) (curves[m.name] ??= []).push([m.step, m.value]);
    return curves;
  });
  app.get<{ Params: { id: string } }>('/api/runs/:id/timeline', async (req, reply) => {
    if (!(await known(req.params.id))) return reply.code(404).send(notFound(req.params.id));
    return (await listStageAttempts(db, req.params.id)).map((a) => ({
      stage: a.stage,
      iteration: a.iteration,
      shard: a.shard,
      attempt: a.attempt,
      status: a.status,
      worker: a.worker,
      startedAt: a.startedAt,
      finishedAt: a.finishedAt,
      durationMs: a.durationMs,
      error: a.error,
    }));
  });
  app.get<{ Params: { id: string }; Querystring: { split?: string; iteration?: string } }>(
    '/api/runs/:id/samples',
    async (req, reply) => {
      if (!(await known(req.params.id))) return reply.code(404).send(notFound(req.params.id));
      const { split, iteration } = req.query;
      if (split !== undefined && split !== 'train' && split !== 'eval')
        return reply.code(400).send({ error: `split must be train or eval, got "${split}"` });
      const it = iteration === undefined ? undefined : Number(iteration);
      if (it !== undefined && !Number.isInteger(it))
        return reply.code(400).send({ error: `iteration must be a whole number, got "${iteration}"` });
      return listSamples(db, req.params.id, { split, iteration: it });
    },
  );
  return app;
}
