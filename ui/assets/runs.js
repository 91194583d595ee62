// `/`: every run, newest first, filterable by status and group, refreshed every few seconds.
import { api, el, fmtDuration, fmtNumber, fmtTime, nav, poll, render, short, statusBadge } from './common.js';

const STATUSES = ['pending', 'running', 'paused', 'blocked', 'completed', 'failed', 'cancelled'];
const params = new URLSearchParams(location.search);
const selected = new Set();

nav([['/', 'Runs']]);

function setFilter(key, value) {
  if (value) params.set(key, value);
  else params.delete(key);
  location.search = params.toString();
}

function filters(groups) {
  const select = (name, options) =>
    el(
      'select',
      { id: `filter-${name}`, onchange: (e) => setFilter(name, e.target.value) },
      el('option', { value: '' }, `any ${name}`),
      ...options.map((o) => el('option', { value: o, selected: params.get(name) === o }, o)),
    );
  return el('div', { class: 'filters' }, select('status', STATUSES), ' ', select('group', groups));
}

function compareButton() {
  const button = el('button', { id: 'compare', disabled: selected.size < 2 }, 'Compare selected');
  button.addEventListener('click', () => (location.href = `/compare?runs=${[...selected].join(',')}`));
  return button;
}

function row(r) {
  const box = el('input', { type: 'checkbox', checked: selected.has(r.id), 'aria-label': `select ${r.id}` });
  box.addEventListener('change', () => {
    if (box.checked) selected.add(r.id);
    else selected.delete(r.id);
    document.getElementById('compare').disabled = selected.size < 2;
  });
  const group = r.group ? el('a', { href: `/?group=${encodeURIComponent(r.group)}` }, r.group) : '–';
  return el(
    'tr',
    { 'data-run': r.id },
    el('td', {}, box),
    el('td', {}, el('a', { href: `/runs/${r.id}` }, r.name || r.id), el('div', { class: 'muted small' }, r.id)),
    el('td', {}, group),
    el('td', {}, statusBadge(r.status)),
    el('td', {}, fmtTime(r.createdAt)),
    el('td', { class: 'num' }, fmtDuration(r.durationMs)),
    el('td', { class: 'num' }, `${r.currentIteration}/${r.iterations ?? '?'}`),
    el('td', { class: 'num' }, `${fmtNumber(r.evalBefore, 3)} → ${fmtNumber(r.evalAfter, 3)}`),
    el('td', { class: 'mono' }, short(r.configHash)),
    el('td', { class: 'mono' }, short(r.codeVersion)),
  );
}

async function load() {
  const query = new URLSearchParams();
  for (const key of ['status', 'group']) if (params.get(key)) query.set(key, params.get(key));
  return api(`/api/runs?${query}`);
}

function table(runs) {
  const head = [
    '',
    'run',
    'group',
    'status',
    'created',
    'duration',
    'iterations',
    'eval reward before → after',
    'config',
    'code',
  ];
  return el(
    'table',
    { class: 'runs', id: 'runs' },
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...runs.map(row)),
  );
}

render(async () => {
  const runs = await load();
  const all = await api('/api/runs');
  const groups = [...new Set(all.map((r) => r.group).filter(Boolean))].sort();
  if (params.get('group') && !groups.includes(params.get('group'))) groups.push(params.get('group'));
  const empty = el('p', { class: 'muted' }, 'No runs yet: operaflow train configs/smoke.yaml --wait');
  return [
    el('h1', {}, 'Runs'),
    el('div', { class: 'toolbar' }, filters(groups), compareButton()),
    runs.length ? table(runs) : empty,
  ];
});

// Live status: the rows are rebuilt from a fresh list (selection kept).
poll(3000, async () => {
  const tbody = document.querySelector('#runs tbody');
  if (tbody) tbody.replaceChildren(...(await load()).map(row));
});
