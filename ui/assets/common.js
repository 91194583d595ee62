// Shared by every page: JSON fetching, a tiny element builder, formatting, smoothing and line charts
// (Observable Plot, loaded as the global `Plot` by the page shell).

/** GET a JSON route; a non-2xx answer throws its `error` text. */
export async function api(path, init) {
  const res = await fetch(path, init);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}

/** el('a', { href: '/x', class: 'y' }, 'text', child…): a DOM element; null/false children are skipped. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

export const $app = () => document.getElementById('app');

/** Replaces the page's content; a thrown error shows as a message instead of a blank page. */
export async function render(build) {
  try {
    const content = await build();
    $app().replaceChildren(...[content].flat().filter((c) => c !== null && c !== undefined));
  } catch (err) {
    $app().replaceChildren(el('p', { class: 'error load-error' }, String(err.message || err)));
  }
}

export function nav(links) {
  document.getElementById('nav').replaceChildren(...links.map(([href, text]) => el('a', { href }, text)));
}

/** The run id of a `/runs/<id>/…` page, and the navigation between that run's pages. */
export function runPage() {
  const id = decodeURIComponent(location.pathname.split('/')[2]);
  nav([
    ['/', 'Runs'],
    [`/runs/${id}`, 'Run'],
    [`/runs/${id}/timeline`, 'Timeline'],
    [`/runs/${id}/samples`, 'Samples'],
  ]);
  return id;
}

export const TERMINAL = ['completed', 'failed', 'cancelled'];
export const statusBadge = (status) => el('span', { class: `status status-${status}`, 'data-status': status }, status);

export function fmtNumber(v, digits = 4) {
  if (v === null || v === undefined) return '–';
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : v.toFixed(digits);
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : '–');
export const short = (hash) => (hash ? hash.slice(0, 12) : '–');

/**
 * Exponential moving average with TensorBoard's debiasing, so the first points are not pulled to 0:
 * s_t = w·s_{t−1} + (1 − w)·x_t, divided by 1 − w^t. w = 0 returns the points unchanged.
 */
export function smooth(points, w) {
  if (!w) return points;
  let acc = 0;
  return points.map(([x, y], i) => {
    acc = w * acc + (1 - w) * y;
    return [x, acc / (1 - w ** (i + 1))];
  });
}

/** A smoothing slider bound to the `smoothing` query parameter; calls `onChange(w)`. */
export function smoothingControl(onChange) {
  const params = new URLSearchParams(location.search);
  const initial = Number(params.get('smoothing') ?? 0);
  const value = el('output', {}, initial.toFixed(2));
  const input = el('input', { type: 'range', min: 0, max: 0.99, step: 0.01, value: initial, id: 'smoothing' });
  input.addEventListener('input', () => {
    const w = Number(input.value);
    value.textContent = w.toFixed(2);
    const p = new URLSearchParams(location.search);
    p.set('smoothing', String(w));
    history.replaceState(null, '', `${location.pathname}?${p}`);
    onChange(w);
  });
  return {
    node: el('label', { class: 'smoothing' }, 'smoothing ', input, ' ', value),
    value: () => Number(input.value),
  };
}

/**
 * One metric's chart: `series` is [{ label, points: [[step, value], …] }]. With smoothing, the raw
 * curve stays faint behind the smoothed one. The chart's element records how many points it plots
 * (`data-points`), which the browser tests read.
 */
export function lineChart(title, series, w = 0, { width = 420, height = 200 } = {}) {
  const raw = series.flatMap((s) => s.points.map(([step, value]) => ({ run: s.label, step, value })));
  const smoothed = series.flatMap((s) => smooth(s.points, w).map(([step, value]) => ({ run: s.label, step, value })));
  const many = series.length > 1;
  const stroke = many ? 'run' : 'steelblue';
  const marks = [
    Plot.ruleY([0], { stroke: '#ddd' }),
    w ? Plot.line(raw, { x: 'step', y: 'value', z: 'run', stroke, strokeOpacity: 0.25 }) : null,
    Plot.line(smoothed, { x: 'step', y: 'value', z: 'run', stroke, tip: true }),
    Plot.dot(smoothed, { x: 'step', y: 'value', fill: stroke, r: 2.5 }),
  ].filter(Boolean);
  const chart = Plot.plot({
    width,
    height,
    marginLeft: 56,
    x: { label: 'step', grid: true },
    y: { label: null, grid: true },
    color: many ? { legend: true } : undefined,
    marks,
  });
  return el(
    'figure',
    { class: 'chart', 'data-metric': title, 'data-points': raw.length },
    el('figcaption', {}, title),
    chart,
  );
}

/** Calls `tick` every `ms` until it returns false; the first call happens after `ms`. */
export function poll(ms, tick) {
  const timer = setInterval(async () => {
    try {
      if ((await tick()) === false) clearInterval(timer);
    } catch (err) {
      console.warn('refresh failed:', err.message);
    }
  }, ms);
}

/** A two-column table from [label, value] pairs. */
export const keyValueTable = (rows, attrs = {}) =>
  el('table', { class: 'kv', ...attrs }, ...rows.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v))));
