/**
 * The dashboard's JSON API (ui/server.ts) on a real PostgreSQL: a run recorded through the db functions
 * the stages use comes back as runs, summary, metric curves, stage timeline and samples; unknown runs and
 * bad filters are errors; with a token every request needs it; binding beyond loopback needs a token.
 */
import { createDb, type DbHandle } from '../../db/client';
import { createRun, finishStageAttempt, startStageAttempt, upsertMetrics, upsertSamples } from '../../db/queries';
import { configHash, parseRunConfig } from '../../config/load';
import { bindProblem, buildUi } from '../../ui/server';
import { runCli, smokeYaml, testEnv, tmpDir, removeTmpDirs } from '../integration/helpers';

let dbh: DbHandle;
const runId = `ui-${process.pid}-${Date.now()}`;

beforeAll(async () => {
  dbh = createDb(process.env.DATABASE_URL);
  const config = parseRunConfig(smokeYaml({ name: 'ui', artifacts: tmpDir() }), 'ui.yaml');
  await createRun(dbh.db, {
    id: runId,
    name: 'ui',
    status: 'running',
    config,
    configHash: configHash(config),
    codeVersion: 'test',
    seed: 7,
    workflowId: runId,
  });
  const key = { runId, stage: 'rollout', iteration: 1, shard: 0 };
  const lost = await startStageAttempt(dbh.db, key, 'host:1');
  await finishStageAttempt(dbh.db, lost.id, { status: 'lost', error: 'worker died' });
  const done = await startStageAttempt(dbh.db, key, 'host:2');
  await finishStageAttempt(dbh.db, done.id, { status: 'completed', output: { ok: true } });
  await upsertMetrics(dbh.db, runId, 1, { 'reward/mean': 0.25, 'train/kl': 0.01 });
  await upsertMetrics(dbh.db, runId, 2, { 'reward/mean': 0.5 });
  await upsertSamples(
    dbh.db,
    [0, 1].map((sampleIndex) => ({
      runId,
      split: 'train' as const,
      iteration: 1,
      promptId: 'p1',
      sampleIndex,
      prompt: 'Describe a fox.',
      reference: 'The fox is red.',
      taskType: 'writing',
      response: `<think>Wait.</think>answer ${sampleIndex}`,
      reward: sampleIndex,
      ppl: 0.5,
      reflection: 0.1,
      reflectionCount: 1,
      logpSegments: [-1.5],
    })),
  );
});

afterAll(async () => {
  await dbh?.close();
  removeTmpDirs();
});

/** The server on an ephemeral loopback port, and a GET that returns status and JSON body. */
async function serve(token?: string) {
  const app = buildUi(dbh.db, token ? { token } : {});
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  const get = async (url: string, headers: Record<string, string> = {}) => {
    const res = await fetch(base + url, { headers });
    return { status: res.status, body: (await res.json()) as unknown };
  };
  return { app, base, get };
}

test('runs, summary, curves, timeline and samples come back as recorded', async () => {
  const { app, get } = await serve();
  const runs = (await get('/api/runs')).body as { id: string; status: string; iterations: number }[];
  expect(runs.find((r) => r.id === runId)).toMatchObject({ status: 'running', iterations: 2 });
  expect((await get(`/api/runs/${runId}`)).body).toMatchObject({ id: runId, status: 'running', seed: 7 });
  expect((await get(`/api/runs/${runId}/metrics`)).body).toEqual({
    'reward/mean': [
      [1, 0.25],
      [2, 0.5],
    ],
    'train/kl': [[1, 0.01]],
  });
  const timeline = (await get(`/api/runs/${runId}/timeline`)).body as {
    attempts: { attempt: number; status: string; worker: string }[];
    blocked: unknown[];
  };
  expect(timeline.blocked).toEqual([]);
  expect(timeline.attempts.map((a) => [a.attempt, a.status, a.worker])).toEqual([
    [1, 'lost', 'host:1'],
    [2, 'completed', 'host:2'],
  ]);
  type SamplesPage = { samples: { id: number; response: string }[]; iterations: unknown[] };
  const page = (await get(`/api/runs/${runId}/samples?split=train&iteration=1`)).body as SamplesPage;
  expect(page.samples.map((s) => s.response)).toEqual(['<think>Wait.</think>answer 0', '<think>Wait.</think>answer 1']);
  expect(page.iterations).toEqual([{ split: 'train', iteration: 1 }]);
  expect(((await get(`/api/runs/${runId}/samples?iteration=2`)).body as SamplesPage).samples).toEqual([]);
  expect(((await get(`/api/runs/${runId}/samples?prompt=p2`)).body as SamplesPage).samples).toEqual([]);
  const detail = (await get(`/api/runs/${runId}/samples/${page.samples[1]!.id}`)).body as {
    segments: { text: string; logp: number }[];
    checkpoints: unknown[];
  };
  expect(detail.segments).toEqual([{ text: 'Wait.', logp: -1.5, counted: false }]);
  expect(detail.checkpoints).toHaveLength(2);
  expect(await get(`/api/runs/${runId}/samples/999999999`)).toMatchObject({ status: 404 });
  expect(await get(`/api/runs/${runId}/samples?iteration=x`)).toEqual({
    status: 400,
    body: { error: 'iteration must be a whole number, got "x"' },
  });
  expect(await get(`/api/runs/${runId}/samples?split=test`)).toMatchObject({ status: 400 });
  expect(await get('/api/runs/nope/metrics')).toEqual({ status: 404, body: { error: 'no run with id "nope"' } });
  await app.close();
});

test('pages are served at their stable URLs, and compare answers with curves and a config diff', async () => {
  const { app, base, get } = await serve();
  for (const path of [
    '/',
    `/runs/${runId}`,
    `/runs/${runId}/timeline`,
    `/runs/${runId}/samples`,
    '/compare?runs=a,b',
  ]) {
    const res = await fetch(base + path);
    expect([path, res.status, res.headers.get('content-type')]).toEqual([path, 200, 'text/html; charset=utf-8']);
    expect(await res.text()).toMatch(/<script type="module" src="\/assets\/\w+\.js"><\/script>/);
  }
  for (const path of ['/runs/nope', '/runs/nope/timeline', '/runs/nope/samples'])
    expect([path, (await fetch(base + path)).status]).toEqual([path, 404]);
  expect((await fetch(`${base}/assets/vendor/plot.umd.min.js`)).status).toBe(200);
  expect((await fetch(`${base}/assets/../package.json`)).status).toBe(404);
  expect((await get('/api/ui')).body).toEqual({ actions: false });
  expect(await get(`/api/runs?status=done`)).toMatchObject({ status: 400 });
  const running = (await get('/api/runs?status=running')).body as { id: string }[];
  expect(running.map((r) => r.id)).toContain(runId);
  expect(await get(`/api/compare?runs=${runId}`)).toMatchObject({ status: 400 });
  expect(await get(`/api/compare?runs=${runId},nope`)).toEqual({
    status: 404,
    body: { error: 'no run with id "nope"' },
  });
  const compare = (await get(`/api/compare?runs=${runId},${runId}`)).body as {
    curves: Record<string, Record<string, unknown>>;
    configDiff: unknown[];
  };
  expect(compare.curves['reward/mean']).toEqual({
    [runId]: [
      [1, 0.25],
      [2, 0.5],
    ],
  });
  expect(compare.configDiff).toEqual([]);
  await app.close();
});

test('with a token, every request must carry it; a browser swaps ?token= for a cookie', async () => {
  const token = 'a-long-enough-secret-token';
  const { app, base, get } = await serve(token);
  expect((await get('/api/runs')).status).toBe(401);
  expect((await get('/api/runs', { authorization: 'Bearer nope' })).status).toBe(401);
  expect((await get('/api/runs', { authorization: `Bearer ${token}` })).status).toBe(200);
  expect((await fetch(`${base}/?token=wrong`)).status).toBe(401);
  const login = await fetch(`${base}/runs/${runId}?token=${token}&smoothing=0.5`, { redirect: 'manual' });
  expect(login.status).toBe(303);
  expect(login.headers.get('location')).toBe(`/runs/${runId}?smoothing=0.5`);
  const cookie = login.headers.get('set-cookie')!;
  expect(cookie).toContain('HttpOnly');
  expect((await get('/api/runs', { cookie: cookie.split(';')[0]! })).status).toBe(200);
  await app.close();
});

test('binding beyond loopback without a token is refused', async () => {
  expect(bindProblem('127.0.0.1', undefined)).toBeUndefined();
  expect(bindProblem('0.0.0.0', 'a-long-enough-secret-token')).toBeUndefined();
  const res = await runCli(['ui', '--host', '0.0.0.0', '--port', '0'], testEnv(`ui-${process.pid}-`), 60_000);
  expect(res.code).toBe(1);
  expect(res.stderr).toContain('ui: binding to 0.0.0.0 exposes every run beyond this machine: set OPERAFLOW_UI_TOKEN');
});
