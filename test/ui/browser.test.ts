/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core), against runs made by
 * the smoke config through the real CLI, worker, Temporal and PostgreSQL: every page loads with no
 * console errors and shows what the database holds (each recorded metric's points, each stage attempt,
 * a sample's segments and checkpoint chart, two runs overlaid); the operator buttons pause and cancel a
 * live run only with actions enabled. Screenshots of each page go to test-output/ui/; with
 * OPERAFLOW_UPDATE_SCREENSHOTS=1 the run and sample pages are also copied to docs/images/ for the README.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../../scripts/cli/chromium';
import { createDb, type DbHandle } from '../../db/client';
import {
  appendEvent,
  createRun,
  finishStageAttempt,
  getRun,
  startStageAttempt,
  listArtifacts,
  listSamples,
  listStageAttempts,
  metricSeries,
  upsertMetrics,
  upsertSamples,
} from '../../db/queries';
import { configHash, parseRunConfig } from '../../config/load';
import { operaRewards, reflectionSegments } from '../../opera/reward';
import { buildUi } from '../../ui/server';
import type { Act } from '../../ui/actions';
import { controlRun } from '../../scripts/cli/control';
import { connect, type Services } from '../../scripts/cli/connect';
import {
  ROOT,
  lastLine,
  removeTmpDirs,
  runCli,
  smokeYaml,
  startWorker,
  terminateOpenRuns,
  testEnv,
  tmpDir,
  waitFor,
  writeConfig,
  type WorkerProcess,
} from '../integration/helpers';

jest.setTimeout(300_000);

const OUT = join(ROOT, 'test-output', 'ui');
const env = testEnv(`browser-${process.pid}-`);
const group = `ui-${process.pid}`;
const started: string[] = [];
let worker: WorkerProcess | undefined;
let dbh: DbHandle;
let services: Services | undefined;
let browser: Browser;
let readOnly: { app: FastifyInstance; base: string };
let runA: string;
let runB: string;
let fixture: Promise<{ sampleId: number; counted: number }>;
const fixtureRun = `ui-fixture-${process.pid}-${Date.now()}`;

async function serve(act?: Act) {
  const app = buildUi(dbh.db, { act });
  return { app, base: await app.listen({ host: '127.0.0.1', port: 0 }) };
}

async function trainSmoke(name: string, seed: number, grpo?: string): Promise<string> {
  const yaml = smokeYaml({ name, artifacts: tmpDir(), grpo }).replace('seed: 7', `seed: ${seed}`);
  const res = await runCli(['train', writeConfig(yaml), '--json', '--group', group, ...(grpo ? [] : ['--wait'])], env);
  if (res.code !== 0) throw new Error(`train exited ${res.code}\n${res.stderr}\nworker:\n${worker?.output()}`);
  const id = (JSON.parse(lastLine(res.stdout)) as { id: string }).id;
  started.push(id);
  return id;
}

/** A recorded run with one hand-written rollout whose reflections are scored by the reward code itself. */
async function recordFixtureRun(): Promise<{ sampleId: number; counted: number }> {
  const config = parseRunConfig(smokeYaml({ name: 'ui-fixture', artifacts: tmpDir() }), 'fixture.yaml');
  await createRun(dbh.db, {
    id: fixtureRun,
    name: 'ui-fixture',
    status: 'completed',
    config,
    configHash: configHash(config),
    codeVersion: 'test',
    seed: 7,
    workflowId: fixtureRun,
  });
  const response = '<think>Wait, the fox is red.\n\nBut it is small.\n\nHmm, red fits.</think>The fox is red.';
  const rollout = { response, logpFull: -1.2, logpInitial: -3, logpSegments: [-2.5, -2.8, -2.0] };
  const { rewards, ema } = operaRewards(
    [{ taskType: 'writing', reference: 'The fox is red.', rollouts: [rollout] }],
    null,
  );
  const r = rewards[0]![0]!;
  await upsertMetrics(dbh.db, fixtureRun, 1, { 'reward/ema': ema! });
  await upsertSamples(dbh.db, [
    {
      runId: fixtureRun,
      split: 'train',
      iteration: 1,
      promptId: 'fox',
      sampleIndex: 0,
      prompt: 'Describe a fox.',
      reference: 'The fox is red.',
      taskType: 'writing',
      reward: r.total,
      ppl: r.ppl,
      reflection: r.reflection,
      reflectionCount: r.reflectionCount,
      advantage: 0,
      ...rollout,
    },
  ]);
  // A crash and its recovery: a lost attempt, a failed one that blocked the run, an operator's retry.
  const key = { runId: fixtureRun, stage: 'update', iteration: 1, shard: 0 };
  const lost = await startStageAttempt(dbh.db, key, 'host-a:1');
  await finishStageAttempt(dbh.db, lost.id, { status: 'lost', error: 'worker host-a:1 died' });
  const failed = await startStageAttempt(dbh.db, key, 'host-b:2');
  await finishStageAttempt(dbh.db, failed.id, { status: 'failed', error: 'loss is NaN at step 3' });
  const blocked = { stage: 'update', iteration: 1, shard: 0, error: 'loss is NaN at step 3' };
  await appendEvent(dbh.db, fixtureRun, 'blocked', 'workflow', blocked);
  await appendEvent(dbh.db, fixtureRun, 'retried', 'alice@host', blocked);
  const done = await startStageAttempt(dbh.db, key, 'host-b:2');
  await finishStageAttempt(dbh.db, done.id, { status: 'completed', output: {} });
  const [row] = await listSamples(dbh.db, fixtureRun);
  return { sampleId: row!.id, counted: r.reflectionCount };
}

/** Opens `url`, waits for `selector`, fails on any console error or page error, saves a screenshot. */
async function visit(url: string, selector: string, shot: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForSelector(selector, { timeout: 30_000 });
  await page.waitForLoadState('networkidle');
  expect(errors).toEqual([]);
  expect(await page.locator('.load-error').count()).toBe(0);
  await page.screenshot({ path: join(OUT, `${shot}.png`), fullPage: true });
  return page;
}

beforeAll(async () => {
  mkdirSync(OUT, { recursive: true });
  dbh = createDb(process.env.DATABASE_URL);
  browser = await launchChromium();
  worker = await startWorker(env);
  [runA, runB] = await Promise.all([trainSmoke('ui-smoke-a', 7), trainSmoke('ui-smoke-b', 8)]);
  readOnly = await serve();
  fixture = recordFixtureRun();
});

afterAll(async () => {
  await terminateOpenRuns(started);
  await readOnly?.app.close();
  await browser?.close();
  await worker?.stop();
  await services?.close();
  await dbh?.close();
  removeTmpDirs();
});

test('runs page: both runs, live status, filter by group', async () => {
  const page = await visit(`${readOnly.base}/`, `tr[data-run="${runA}"]`, 'runs');
  for (const id of [runA, runB])
    expect(await page.locator(`tr[data-run="${id}"] [data-status]`).getAttribute('data-status')).toBe('completed');
  await page.selectOption('#filter-group', group);
  await page.waitForURL(/group=/);
  await page.waitForSelector(`tr[data-run="${runA}"]`);
  expect((await page.locator('#runs tbody tr').all()).length).toBe(2);
  await page.close();
});

test('run page: a chart per recorded metric with all its points, the config and the audit trail', async () => {
  const page = await visit(`${readOnly.base}/runs/${runA}`, '#charts figure', 'run');
  const counts = new Map<string, number>();
  for (const m of await metricSeries(dbh.db, runA))
    if (!/^(data|coldstart)\//.test(m.name)) counts.set(m.name, (counts.get(m.name) ?? 0) + 1);
  expect(counts.size).toBeGreaterThan(20);
  for (const [name, n] of counts) {
    const chart = page.locator(`figure[data-metric="${name}"]`);
    expect(await chart.getAttribute('data-points')).toBe(String(n));
    expect(await chart.locator('svg circle').count()).toBe(n);
  }
  expect(await page.locator('#config').innerText()).toContain('name: ui-smoke-a');
  const audit = await page.locator('#audit').innerText();
  for (const a of await listArtifacts(dbh.db, runA, 'checkpoint')) expect(audit).toContain(a.sha256);
  expect(await page.locator('button[data-action]').count()).toBe(0);
  // Smoothing redraws every chart; the points plotted stay the recorded ones.
  await page.locator('#smoothing').fill('0.6');
  await page.waitForURL(/smoothing=0.6/);
  expect(await page.locator('figure[data-metric="reward/mean"]').getAttribute('data-points')).toBe(
    String(counts.get('reward/mean')),
  );
  await page.close();
});

test('timeline page: one bar per stage attempt', async () => {
  const page = await visit(`${readOnly.base}/runs/${runA}/timeline`, '#timeline svg', 'timeline');
  const attempts = await listStageAttempts(dbh.db, runA);
  expect(await page.locator('#timeline').getAttribute('data-bars')).toBe(String(attempts.length));
  expect(await page.locator('#attempts tr').count()).toBe(attempts.length + 1);
  await page.close();

  // A crash and its recovery: three attempts and the blocked period, the errors in the table.
  await fixture;
  const recovery = await visit(`${readOnly.base}/runs/${fixtureRun}/timeline`, '#timeline svg', 'timeline-recovery');
  expect(await recovery.locator('#timeline').getAttribute('data-bars')).toBe('4');
  expect(await recovery.locator('#timeline-summary').innerText()).toBe(
    '3 attempts · 2 retries · 2 failed or lost · 1 blocked periods',
  );
  expect(await recovery.locator('#attempts').innerText()).toContain('loss is NaN at step 3');
  await recovery.close();
});

test('samples page: a rollout shows its segments and the checkpoint chart; reflections are marked', async () => {
  // The smoke run's rollout with the most reasoning segments (the tiny model writes few).
  const rows = await listSamples(dbh.db, runA, { split: 'train' });
  const best = rows.reduce((a, b) =>
    reflectionSegments(b.response).length > reflectionSegments(a.response).length ? b : a,
  );
  const segments = reflectionSegments(best.response).length;
  expect(segments).toBeGreaterThan(0);
  const url = `${readOnly.base}/runs/${runA}/samples?split=train&iteration=${best.iteration}&sample=${best.id}`;
  const page = await visit(url, '#sample-detail', 'samples');
  expect(await page.locator('#sample-detail .segment').count()).toBe(segments);
  expect(await page.locator('#checkpoint-chart').getAttribute('data-points')).toBe(String(segments + 1));
  expect(await page.locator('#checkpoint-chart svg circle').count()).toBe(segments + 1);
  expect(await page.locator('#reward-components').innerText()).toContain(best.reward.toFixed(4));
  // Another row opens that sample.
  const other = rows.find((r) => r.iteration === best.iteration && r.id !== best.id)!;
  await page.locator(`tr[data-sample="${other.id}"]`).click();
  await page.waitForURL(new RegExp(`sample=${other.id}`));
  await page.close();

  const { sampleId, counted } = await fixture;
  expect(counted).toBe(2);
  const marked = await visit(
    `${readOnly.base}/runs/${fixtureRun}/samples?split=train&iteration=1&sample=${sampleId}`,
    '#sample-detail',
    'samples-reflections',
  );
  expect(await marked.locator('.segment').count()).toBe(3);
  expect(await marked.locator('.segment.counted').count()).toBe(counted);
  expect(await marked.locator('.segment.counted pre').allInnerTexts()).toEqual([
    'Wait, the fox is red.',
    'Hmm, red fits.',
  ]);
  await marked.close();
});

test('compare page: two runs overlaid, and their config diff', async () => {
  const page = await visit(`${readOnly.base}/compare?runs=${runA},${runB}`, '#charts figure', 'compare');
  expect(await page.locator('#compared-runs tr[data-run]').count()).toBe(2);
  const diff = await page.locator('#config-diff').innerText();
  expect(diff).toContain('seed');
  expect(diff).toContain('ui-smoke-b');
  const points =
    (await metricSeries(dbh.db, runA, ['reward/mean'])).length +
    (await metricSeries(dbh.db, runB, ['reward/mean'])).length;
  expect(await page.locator('figure[data-metric="reward/mean"]').getAttribute('data-points')).toBe(String(points));
  await page.close();
});

test('operator buttons only with actions enabled: pause, then cancel, a live run', async () => {
  const refused = await fetch(`${readOnly.base}/api/runs/${runA}/actions/pause`, {
    method: 'POST',
    headers: { 'x-operaflow-action': '1' },
  });
  expect(refused.status).toBe(403);

  services = await connect();
  const s = services;
  const withActions = await serve((action, runId, who) => controlRun(s, action, runId, who));
  try {
    const live = await trainSmoke(
      'ui-live',
      9,
      '{ iterations: 200, promptsPerIteration: 4, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 48 }',
    );
    const status = async () => (await getRun(dbh.db, live))?.status;
    const page = await visit(`${withActions.base}/runs/${live}`, 'button[data-action="pause"]', 'run-actions');
    await page.locator('button[data-action="pause"]').click();
    await page.locator('#action-result', { hasText: 'pause sent' }).waitFor();
    await waitFor('the run to pause', async () => ((await status()) === 'paused' ? true : undefined), 60_000);
    await page.locator('button[data-action="cancel"]').click();
    await page.locator('#action-result', { hasText: 'cancel sent' }).waitFor();
    await waitFor('the run to be cancelled', async () => ((await status()) === 'cancelled' ? true : undefined), 60_000);
    // A request without the action header (what a form on another site could send) is refused.
    const forged = await fetch(`${withActions.base}/api/runs/${live}/actions/resume`, { method: 'POST' });
    expect(forged.status).toBe(400);
    await page.close();
  } finally {
    await withActions.app.close();
  }
});

afterAll(() => {
  if (process.env.OPERAFLOW_UPDATE_SCREENSHOTS !== '1') return;
  mkdirSync(join(ROOT, 'docs', 'images'), { recursive: true });
  for (const name of ['run', 'samples', 'samples-reflections'])
    copyFileSync(join(OUT, `${name}.png`), join(ROOT, 'docs', 'images', `ui-${name}.png`));
});
