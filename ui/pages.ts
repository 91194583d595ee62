/**
 * The pages: one HTML shell per URL, filled in the browser by its script under ui/assets/ from the
 * JSON API. Charts are drawn by Observable Plot (with d3), served from node_modules as they ship.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

const ASSETS = join(__dirname, 'assets');
const MODULES = join(__dirname, '..', 'node_modules');

/** URL path under /assets/ → file, content type. Nothing else is served from disk. */
const FILES: Record<string, [string, string]> = {
  'style.css': [join(ASSETS, 'style.css'), 'text/css'],
  'common.js': [join(ASSETS, 'common.js'), 'text/javascript'],
  'runs.js': [join(ASSETS, 'runs.js'), 'text/javascript'],
  'run.js': [join(ASSETS, 'run.js'), 'text/javascript'],
  'timeline.js': [join(ASSETS, 'timeline.js'), 'text/javascript'],
  'samples.js': [join(ASSETS, 'samples.js'), 'text/javascript'],
  'compare.js': [join(ASSETS, 'compare.js'), 'text/javascript'],
  'vendor/d3.min.js': [join(MODULES, 'd3', 'dist', 'd3.min.js'), 'text/javascript'],
  'vendor/plot.umd.min.js': [join(MODULES, '@observablehq', 'plot', 'dist', 'plot.umd.min.js'), 'text/javascript'],
};

const PAGES = {
  runs: 'Runs',
  run: 'Run',
  timeline: 'Stage timeline',
  samples: 'Samples',
  compare: 'Compare',
} as const;
type Page = keyof typeof PAGES;

function shell(page: Page): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${PAGES[page]} · operaflow</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/style.css">
<script src="/assets/vendor/d3.min.js"></script>
<script src="/assets/vendor/plot.umd.min.js"></script>
</head>
<body data-page="${page}">
<header><a class="brand" href="/">operaflow</a><nav id="nav"></nav></header>
<main id="app"><p class="muted">Loading…</p></main>
<script type="module" src="/assets/${page}.js"></script>
</body>
</html>
`;
}

/**
 * `runExists` lets a run's pages answer 404 for an unknown id (the page still shows the API's message),
 * so a mistyped link is an error to scripts and link checkers too, not a 200.
 */
export function registerPages(app: FastifyInstance, runExists: (id: string) => Promise<boolean>): void {
  const html = (page: Page) => async (req: FastifyRequest<{ Params: { id?: string } }>, reply: FastifyReply) => {
    const id = req.params.id;
    if (id !== undefined && !(await runExists(id))) reply.code(404);
    return reply.type('text/html; charset=utf-8').send(shell(page));
  };
  app.get('/', html('runs'));
  app.get('/runs/:id', html('run'));
  app.get('/runs/:id/timeline', html('timeline'));
  app.get('/runs/:id/samples', html('samples'));
  app.get('/compare', html('compare'));
  app.get<{ Params: { '*': string } }>('/assets/*', async (req, reply) => {
    const file = FILES[req.params['*']];
    if (!file) return reply.code(404).send({ error: `no asset "${req.params['*']}"` });
    return reply.type(file[1]).header('cache-control', 'no-cache').send(readFileSync(file[0]));
  });
}
