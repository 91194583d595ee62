// `/runs/<id>`: live curves of every recorded metric (with smoothing), the config and the audit trail,
// and, when the dashboard runs with --allow-actions, the operator buttons.
import {
  TERMINAL,
  api,
  el,
  fmtDuration,
  fmtNumber,
  fmtTime,
  keyValueTable,
  lineChart,
  poll,
  render,
  short,
  smoothingControl,
  statusBadge,
  runPage,
} from './common.js';

const id = runPage();

// Metrics recorded once (dataset sizes) read better as numbers than as one-point charts.
const SCALAR_PREFIXES = ['data/', 'coldstart/'];
const isScalar = (name) => SCALAR_PREFIXES.some((p) => name.startsWith(p));
/** Sections of the chart grid, in reading order; other prefixes go last. */
const SECTIONS = ['reward/', 'train/', 'rollout/', 'eval/', 'sft/'];
const sectionOf = (name) => SECTIONS.find((p) => name.startsWith(p)) ?? 'other';

let smoothing;

function charts(curves) {
  const names = Object.keys(curves).filter((n) => !isScalar(n));
  const bySection = new Map();
  for (const n of names.sort()) {
    const s = sectionOf(n);
    if (!bySection.has(s)) bySection.set(s, []);
    bySection.get(s).push(n);
  }
  const order = [...SECTIONS, 'other'].filter((s) => bySection.has(s));
  const w = smoothing.value();
  return el(
    'div',
    { id: 'charts' },
    ...order.map((s) =>
      el(
        'section',
        {},
        el('h3', {}, s.replace('/', '')),
        el(
          'div',
          { class: 'grid' },
          ...bySection.get(s).map((n) => lineChart(n, [{ label: id, points: curves[n] }], w)),
        ),
      ),
    ),
    names.length ? null : el('p', { class: 'muted' }, 'No curves recorded yet.'),
  );
}

function scalars(curves) {
  const rows = Object.keys(curves)
    .filter(isScalar)
    .sort()
    .map((n) => [n, fmtNumber(curves[n].at(-1)[1], 0)]);
  return rows.length ? keyValueTable(rows, { id: 'scalars' }) : null;
}

function header(run) {
  return el(
    'div',
    { class: 'run-header' },
    el('h1', {}, run.name || run.id, ' ', el('span', { id: 'status' }, statusBadge(run.status))),
    el(
      'p',
      { class: 'muted' },
      `${run.id} · iteration `,
      el('span', { id: 'iteration' }, `${run.currentIteration}/${run.iterations ?? '?'}`),
      ` · seed ${run.seed} · created ${fmtTime(run.createdAt)} · duration ${fmtDuration(run.durationMs)}`,
      run.group ? [' · group ', el('a', { href: `/?group=${encodeURIComponent(run.group)}` }, run.group)] : null,
      run.group ? [' · ', el('a', { href: `/compare?group=${encodeURIComponent(run.group)}` }, 'compare group')] : null,
    ),
    run.error ? el('p', { class: 'error' }, run.error) : null,
  );
}

function actions() {
  const out = el('span', { class: 'muted', id: 'action-result' });
  const button = (action) =>
    el(
      'button',
      {
        'data-action': action,
        onclick: async () => {
          out.textContent = `${action}…`;
          try {
            const res = await api(`/api/runs/${id}/actions/${action}`, {
              method: 'POST',
              headers: { 'x-operaflow-action': '1' },
            });
            out.textContent = res.message;
          } catch (err) {
            out.textContent = err.message;
          }
        },
      },
      action,
    );
  return el('div', { class: 'actions' }, ...['pause', 'resume', 'cancel', 'retry'].map(button), ' ', out);
}

function audit(run) {
  const a = run.audit;
  return el(
    'section',
    { id: 'audit' },
    el('h2', {}, 'Audit trail'),
    keyValueTable([
      ['config hash', el('code', {}, a.configHash)],
      ['code version', el('code', {}, a.codeVersion)],
      ['seed', String(a.seed)],
      [
        'dataset',
        a.dataset ? [el('code', {}, a.dataset.sha256), ' ', el('span', { class: 'muted' }, a.dataset.uri)] : '–',
      ],
    ]),
    el('h3', {}, 'Weights and optimizer files'),
    el(
      'table',
      { class: 'files' },
      el('tr', {}, ...['iteration', 'file', 'sha256', 'bytes', 'path'].map((h) => el('th', {}, h))),
      ...a.checkpoints.map((c) =>
        el(
          'tr',
          {},
          el('td', { class: 'num' }, String(c.iteration)),
          el('td', {}, c.name),
          el('td', { class: 'mono' }, c.sha256),
          el('td', { class: 'num' }, String(c.bytes)),
          el('td', { class: 'mono small' }, c.uri),
        ),
      ),
    ),
    el('h3', {}, 'Events'),
    el('ul', { class: 'events' }, ...run.events.map((e) => el('li', {}, `${fmtTime(e.at)} · ${e.type} by ${e.actor}`))),
  );
}

let curves = {};
const redrawCharts = () => document.getElementById('charts')?.replaceWith(charts(curves));

render(async () => {
  const [run, ui, metrics] = await Promise.all([
    api(`/api/runs/${id}`),
    api('/api/ui'),
    api(`/api/runs/${id}/metrics`),
  ]);
  curves = metrics;
  smoothing = smoothingControl(redrawCharts);
  return [
    header(run),
    ui.actions ? actions() : null,
    el(
      'section',
      {},
      el('div', { class: 'toolbar' }, el('h2', {}, 'Metrics'), smoothing.node),
      charts(curves),
      scalars(curves),
    ),
    el('section', {}, el('h2', {}, 'Config'), el('pre', { id: 'config' }, run.configYaml)),
    audit(run),
  ];
});

// Live: while the run can still change, refresh its status and curves.
poll(5000, async () => {
  const [run, metrics] = await Promise.all([api(`/api/runs/${id}`), api(`/api/runs/${id}/metrics`)]);
  document.getElementById('status')?.replaceChildren(statusBadge(run.status));
  const it = document.getElementById('iteration');
  if (it) it.textContent = `${run.currentIteration}/${run.iterations ?? '?'}`;
  document.getElementById('audit')?.replaceWith(audit(run));
  if (JSON.stringify(metrics) !== JSON.stringify(curves)) {
    curves = metrics;
    redrawCharts();
  }
  return !TERMINAL.includes(run.status);
});
