// `/runs/<id>/timeline`: every stage attempt as a bar on a time axis (one lane per stage and shard,
// coloured by how it ended), the periods the run was blocked, and every attempt in a table with its
// worker and error, so a crash and its recovery can be seen.
import { TERMINAL, api, el, fmtDuration, fmtTime, poll, render, statusBadge, runPage } from './common.js';

const id = runPage();

const COLORS = { completed: '#3a9a5b', running: '#3b7dd8', failed: '#d0453a', lost: '#e39b2d', blocked: '#8e44ad' };
// Fan-out stages run shards side by side: each shard gets its own lane.
const lane = (a) => (a.stage === 'rollout' || a.stage === 'score' ? `${a.stage} #${a.shard}` : a.stage);

function chart(data) {
  const bars = data.attempts.map((a) => ({
    lane: lane(a),
    start: new Date(a.startedAt),
    end: new Date(a.endedAt),
    status: a.status,
    label: [
      `${a.stage} iteration ${a.iteration} shard ${a.shard} · attempt ${a.attempt}`,
      `${a.status} on ${a.worker ?? '?'}${a.providers ? ` (${a.providers})` : ''} · ${fmtDuration(a.durationMs)}`,
      a.error ? `error: ${a.error.slice(0, 200)}` : null,
    ]
      .filter(Boolean)
      .join('\n'),
  }));
  const blocked = data.blocked.map((b) => ({
    lane: 'blocked',
    start: new Date(b.from),
    end: new Date(b.to),
    status: 'blocked',
    label: `blocked on ${b.stage}${b.error ? `: ${b.error.slice(0, 200)}` : ''}\n${b.resolvedBy ?? 'still blocked'}`,
  }));
  const all = [...bars, ...blocked];
  const lanes = [...new Set(all.map((b) => b.lane))];
  const figure = Plot.plot({
    width: Math.max(700, document.body.clientWidth - 64),
    height: 60 + 28 * lanes.length,
    marginLeft: 110,
    x: { type: 'time', label: 'time', grid: true },
    y: { domain: lanes, label: null },
    color: { domain: Object.keys(COLORS), range: Object.values(COLORS), legend: true },
    marks: [
      Plot.barX(all, {
        x1: 'start',
        x2: 'end',
        y: 'lane',
        fill: 'status',
        title: 'label',
        insetTop: 3,
        insetBottom: 3,
      }),
      Plot.tip(all, Plot.pointer({ x: 'start', y: 'lane', title: 'label' })),
    ],
  });
  return el('figure', { class: 'chart wide', id: 'timeline', 'data-bars': all.length }, figure);
}

function table(data) {
  return el(
    'table',
    { class: 'attempts', id: 'attempts' },
    el(
      'tr',
      {},
      ...[
        'stage',
        'iteration',
        'shard',
        'attempt',
        'status',
        'worker',
        'providers',
        'started',
        'duration',
        'error',
      ].map((h) => el('th', {}, h)),
    ),
    ...data.attempts.map((a) =>
      el(
        'tr',
        { class: a.error ? 'has-error' : null },
        el('td', {}, a.stage),
        el('td', { class: 'num' }, String(a.iteration)),
        el('td', { class: 'num' }, String(a.shard)),
        el('td', { class: 'num' }, String(a.attempt)),
        el('td', {}, statusBadge(a.status)),
        el('td', { class: 'mono small' }, a.worker ?? '–'),
        el('td', { class: 'mono small' }, a.providers ?? '–'),
        el('td', {}, fmtTime(a.startedAt)),
        el('td', { class: 'num' }, fmtDuration(a.durationMs)),
        el('td', { class: 'error small' }, a.error ?? ''),
      ),
    ),
  );
}

function page(data) {
  const retries = data.attempts.filter((a) => a.attempt > 1).length;
  const failures = data.attempts.filter((a) => a.status === 'failed' || a.status === 'lost').length;
  return [
    el('h1', {}, `Stage timeline: ${data.run.name || data.run.id} `, statusBadge(data.run.status)),
    el(
      'p',
      { class: 'muted', id: 'timeline-summary' },
      `${data.attempts.length} attempts · ${retries} retries · ${failures} failed or lost · ${data.blocked.length} blocked periods`,
    ),
    chart(data),
    table(data),
  ];
}

render(async () => page(await api(`/api/runs/${id}/timeline`)));

poll(5000, async () => {
  const data = await api(`/api/runs/${id}/timeline`);
  document.getElementById('app').replaceChildren(...page(data));
  return !TERMINAL.includes(data.run.status);
});
