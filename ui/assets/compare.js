// `/compare?runs=a,b[,…]` or `/compare?group=<name>`: the runs' curves overlaid, metric by metric,
// and the config keys on which they differ.
import { api, el, fmtNumber, lineChart, nav, render, smoothingControl, statusBadge } from './common.js';

const params = new URLSearchParams(location.search);
nav([['/', 'Runs']]);

const show = (v) => (v === undefined ? '(unset)' : typeof v === 'string' ? v : JSON.stringify(v));

function runsTable(runs) {
  return el(
    'table',
    { class: 'runs', id: 'compared-runs' },
    el('tr', {}, ...['run', 'status', 'seed', 'eval reward before → after'].map((h) => el('th', {}, h))),
    ...runs.map((r) =>
      el(
        'tr',
        { 'data-run': r.id },
        el('td', {}, el('a', { href: `/runs/${r.id}` }, r.name || r.id), el('div', { class: 'muted small' }, r.id)),
        el('td', {}, statusBadge(r.status)),
        el('td', { class: 'num' }, String(r.seed)),
        el('td', { class: 'num' }, `${fmtNumber(r.evalBefore, 3)} → ${fmtNumber(r.evalAfter, 3)}`),
      ),
    ),
  );
}

function diffTable(runs, diff) {
  if (diff.length === 0) return el('p', { class: 'muted', id: 'config-diff' }, 'The configs are identical.');
  return el(
    'table',
    { class: 'diff', id: 'config-diff' },
    el('tr', {}, el('th', {}, 'config key'), ...runs.map((r) => el('th', {}, r.name || r.id))),
    ...diff.map((d) =>
      el('tr', {}, el('td', { class: 'mono' }, d.key), ...d.values.map((v) => el('td', { class: 'mono' }, show(v)))),
    ),
  );
}

function charts(data, runs, w) {
  const label = (r) => `${r.name || r.id} (${r.id.slice(-4)})`;
  return el(
    'div',
    { id: 'charts', class: 'grid' },
    ...Object.keys(data.curves)
      .filter((n) => !n.startsWith('data/') && !n.startsWith('coldstart/'))
      .sort()
      .map((n) =>
        lineChart(
          n,
          runs.filter((r) => data.curves[n][r.id]).map((r) => ({ label: label(r), points: data.curves[n][r.id] })),
          w,
          { width: 460, height: 220 },
        ),
      ),
  );
}

render(async () => {
  const query = params.get('group')
    ? `group=${encodeURIComponent(params.get('group'))}`
    : `runs=${params.get('runs') ?? ''}`;
  const data = await api(`/api/compare?${query}`);
  const smoothing = smoothingControl((w) => document.getElementById('charts').replaceWith(charts(data, data.runs, w)));
  return [
    el('h1', {}, `Compare ${data.runs.length} runs`),
    runsTable(data.runs),
    el('h2', {}, 'Config diff'),
    diffTable(data.runs, data.configDiff),
    el('div', { class: 'toolbar' }, el('h2', {}, 'Curves'), smoothing.node),
    charts(data, data.runs, smoothing.value()),
  ];
});
