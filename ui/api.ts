/**
 * The dashboard's JSON API, one route per page (`/api/runs` ↔ `/`, `/api/runs/<id>` ↔ `/runs/<id>`, …)
 * plus the pieces the pages load separately (curves, one sample). Read-only: actions live in ui/actions.ts.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { stringify } from 'yaml';
import type { Db } from '../db/client';
import {
  getRun,
  getSample,
  listArtifacts,
  listEvents,
  listRuns,
  listSamples,
  listStageAttempts,
  metricSeries,
  runSummary,
  sampleIterations,
} from '../db/queries';
import { RUN_STATUSES, type Run } from '../db/schema';
import { auditTrail, batchValues, configDiff, runRow, sampleDetail, timelineOf } from './views';

/** How many runs the runs page and compare load at most. */
const MAX_RUNS = 500;

type Curves = Record<string, [number, number][]>;

async function curvesOf(db: Db, runId: string): Promise<Curves> {
  const curves: Curves = {};
  for (const m of await metricSeries(db, runId)) (curves[m.name] ??= []).push([m.step, m.value]);
  return curves;
}

const badRequest = (reply: FastifyReply, error: string) => reply.code(400).send({ error });

/** A whole number from a query string, or an error naming the parameter. */
function wholeNumber(name: string, value: string | undefined): number | undefined | string {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  return Number.isInteger(n) ? n : `${name} must be a whole number, got "${value}"`;
}

export function registerApi(app: FastifyInstance, db: Db, options: { actions: boolean }): void {
  // The run of `:id`, or a 404 sent (handlers return early when this is undefined).
  const runOr404 = async (id: string, reply: FastifyReply): Promise<Run | undefined> => {
    const run = await getRun(db, id);
    if (!run) await reply.code(404).send({ error: `no run with id "${id}"` });
    return run;
  };

  app.get('/api/ui', async () => ({ actions: options.actions }));

  app.get<{ Querystring: { status?: string; group?: string } }>('/api/runs', async (req, reply) => {
    const { status, group } = req.query;
    if (status && !(RUN_STATUSES as readonly string[]).includes(status))
      return badRequest(reply, `status must be one of ${RUN_STATUSES.join(', ')}, got "${status}"`);
    const rows = await listRuns(db, MAX_RUNS, group || undefined);
    return rows.filter((r) => !status || r.status === status).map((r) => runRow(r));
  });

  app.get<{ Params: { id: string } }>('/api/runs/:id', async (req, reply) => {
    const run = await runOr404(req.params.id, reply);
    if (!run) return;
    return {
      ...(await runSummary(db, run.id)),
      config: run.config,
      configYaml: stringify(run.config),
      durationMs: runRow(run).durationMs,
      iterations: runRow(run).iterations,
      audit: auditTrail(run, await listArtifacts(db, run.id)),
    };
  });

  // Curves: name → [[step, value], …] in step order.
  app.get<{ Params: { id: string } }>('/api/runs/:id/metrics', async (req, reply) => {
    const run = await runOr404(req.params.id, reply);
    if (run) return curvesOf(db, run.id);
  });

  app.get<{ Params: { id: string } }>('/api/runs/:id/timeline', async (req, reply) => {
    const run = await runOr404(req.params.id, reply);
    if (!run) return;
    const [attempts, events] = await Promise.all([listStageAttempts(db, run.id), listEvents(db, run.id)]);
    return { run: runRow(run), ...timelineOf(attempts, events) };
  });

  app.get<{ Params: { id: string }; Querystring: { split?: string; iteration?: string; prompt?: string } }>(
    '/api/runs/:id/samples',
    async (req, reply) => {
      const run = await runOr404(req.params.id, reply);
      if (!run) return;
      const { split, prompt } = req.query;
      if (split !== undefined && split !== '' && split !== 'train' && split !== 'eval')
        return badRequest(reply, `split must be train or eval, got "${split}"`);
      const iteration = wholeNumber('iteration', req.query.iteration);
      if (typeof iteration === 'string') return badRequest(reply, iteration);
      const [rows, iterations] = await Promise.all([
        listSamples(db, run.id, { split: split || undefined, iteration, promptId: prompt || undefined }),
        sampleIterations(db, run.id),
      ]);
      return { run: runRow(run), iterations, samples: rows };
    },
  );

  app.get<{ Params: { id: string; sample: string } }>('/api/runs/:id/samples/:sample', async (req, reply) => {
    const run = await runOr404(req.params.id, reply);
    if (!run) return;
    const id = wholeNumber('sample', req.params.sample);
    if (typeof id === 'string' || id === undefined) return badRequest(reply, id ?? 'sample id missing');
    const sample = await getSample(db, run.id, id);
    if (!sample) return reply.code(404).send({ error: `run ${run.id} has no sample ${id}` });
    // The baseline the batch was smoothed with: train batches record it; evaluation starts from none,
    // so its baseline is the mean of its own batch.
    let ema: number | null;
    if (sample.split === 'train') {
      const [row] = (await metricSeries(db, run.id, ['reward/ema'])).filter((m) => m.step === sample.iteration);
      ema = row?.value ?? null;
    } else {
      const values = batchValues(await listSamples(db, run.id, { split: 'eval', iteration: sample.iteration }));
      ema = values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
    }
    return sampleDetail(sample, run.config, ema);
  });

  app.get<{ Querystring: { runs?: string; group?: string } }>('/api/compare', async (req, reply) => {
    const ids = (req.query.runs ?? '').split(',').filter(Boolean);
    const rows = req.query.group
      ? (await listRuns(db, MAX_RUNS, req.query.group)).reverse()
      : await Promise.all(ids.map((id) => getRun(db, id)));
    const missing = ids.filter((_, i) => !req.query.group && !rows[i]);
    if (missing.length) return reply.code(404).send({ error: `no run with id "${missing[0]}"` });
    const runs = rows as Run[];
    if (runs.length < 2) return badRequest(reply, 'compare needs two or more runs: ?runs=<id>,<id> or ?group=<name>');
    const curves: Record<string, Record<string, [number, number][]>> = {};
    for (const run of runs)
      for (const [name, points] of Object.entries(await curvesOf(db, run.id))) (curves[name] ??= {})[run.id] = points;
    return {
      runs: runs.map((r) => runRow(r)),
      curves,
      configDiff: configDiff(runs.map((r) => r.config)),
    };
  });
}
