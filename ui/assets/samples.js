// `/runs/<id>/samples`: the scored rollouts of one iteration (or the evaluation generations), filterable
// by prompt; one sample opened shows its reasoning segments with the ones counted as reflections
// marked, the reference log-probability at each OPERA checkpoint as a chart, and its reward components.
// The state lives in the query string (?split=&iteration=&prompt=&sample=), so a sample has a link.
import { api, el, fmtNumber, keyValueTable, render, runPage } from './common.js';

const id = runPage();
const params = new URLSearchParams(location.search);

function go(changes) {
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === '') params.delete(k);
    else params.set(k, v);
  }
  location.search = params.toString();
}

function pickers(iterations, prompts) {
  const current = `${params.get('split')}:${params.get('iteration')}`;
  const which = el(
    'select',
    {
      id: 'iteration',
      onchange: (e) => {
        const [split, iteration] = e.target.value.split(':');
        go({ split, iteration, prompt: null, sample: null });
      },
    },
    ...iterations.map((i) =>
      el(
        'option',
        { value: `${i.split}:${i.iteration}`, selected: current === `${i.split}:${i.iteration}` },
        i.split === 'train' ? `iteration ${i.iteration} rollouts` : `evaluation after iteration ${i.iteration}`,
      ),
    ),
  );
  const prompt = el(
    'select',
    { id: 'prompt', onchange: (e) => go({ prompt: e.target.value, sample: null }) },
    el('option', { value: '' }, 'every prompt'),
    ...prompts.map((p) => el('option', { value: p, selected: params.get('prompt') === p }, p)),
  );
  return el('div', { class: 'filters' }, which, ' ', prompt);
}

const preview = (text) => (text.length > 120 ? `${text.slice(0, 120)}…` : text);

function table(samples) {
  const head = ['prompt', '#', 'reward', 'ppl', 'reflection', 'counted', 'advantage', 'correct', 'response'];
  return el(
    'table',
    { class: 'samples', id: 'samples' },
    el('tr', {}, ...head.map((h) => el('th', {}, h))),
    ...samples.map((s) =>
      el(
        'tr',
        {
          'data-sample': s.id,
          class: String(s.id) === params.get('sample') ? 'selected' : null,
          onclick: () => go({ sample: s.id }),
        },
        el('td', { class: 'mono small' }, s.promptId),
        el('td', { class: 'num' }, String(s.sampleIndex)),
        el('td', { class: 'num' }, fmtNumber(s.reward, 3)),
        el('td', { class: 'num' }, fmtNumber(s.ppl, 3)),
        el('td', { class: 'num' }, fmtNumber(s.reflection, 3)),
        el('td', { class: 'num' }, String(s.reflectionCount)),
        el('td', { class: 'num' }, fmtNumber(s.advantage, 3)),
        el('td', {}, s.correct === null ? '–' : String(s.correct)),
        el('td', { class: 'response-preview' }, preview(s.response)),
      ),
    ),
  );
}

/** The response with its `<think>` block laid out as segments; counted reflections highlighted. */
function response(detail) {
  const open = detail.response.indexOf('<think>');
  const close = open < 0 ? -1 : detail.response.indexOf('</think>', open + 7);
  if (close < 0 || detail.segments.length === 0)
    return el(
      'div',
      { class: 'response' },
      el('pre', {}, detail.response),
      el('p', { class: 'muted' }, 'No closed <think> block: no reasoning segments.'),
    );
  return el(
    'div',
    { class: 'response' },
    el('pre', { class: 'outside' }, detail.response.slice(0, open + 7)),
    ...detail.segments.map((s, j) =>
      el(
        'div',
        { class: `segment${s.counted ? ' counted' : ''}`, 'data-segment': j },
        el(
          'div',
          { class: 'segment-label' },
          `segment ${j + 1} · log p(reference) ${fmtNumber(s.logp, 3)}`,
          s.counted ? ' · counted as a reflection' : '',
        ),
        el('pre', {}, s.text),
      ),
    ),
    el('pre', { class: 'outside' }, detail.response.slice(close)),
  );
}

function checkpointChart(detail) {
  const points = detail.checkpoints
    .map((c, i) => ({ i, label: c.label, logp: c.logp, counted: i > 0 && detail.segments[i - 1].counted }))
    .filter((p) => p.logp !== null);
  const figure = Plot.plot({
    width: 520,
    height: 220,
    marginLeft: 56,
    x: { label: 'OPERA checkpoint (0 = after <think>)', ticks: points.map((p) => p.i), tickFormat: 'd' },
    y: { label: 'mean log p(reference)', grid: true },
    color: { domain: [false, true], range: ['#3b7dd8', '#e0a100'] },
    marks: [
      Plot.line(points, { x: 'i', y: 'logp', stroke: '#999' }),
      Plot.dot(points, { x: 'i', y: 'logp', fill: 'counted', r: 5, title: (p) => `${p.label}: ${p.logp.toFixed(4)}` }),
    ],
  });
  return el(
    'figure',
    { class: 'chart', id: 'checkpoint-chart', 'data-points': points.length },
    el('figcaption', {}, 'Reference log-probability at each checkpoint (gold: counted reflection)'),
    figure,
  );
}

function detailView(d) {
  return el(
    'section',
    { id: 'sample-detail' },
    el('h2', {}, `Sample ${d.promptId} #${d.sampleIndex} (${d.split}, iteration ${d.iteration})`),
    d.marksAgree
      ? null
      : el('p', { class: 'error' }, 'The marked segments do not add up to the recorded reflection count.'),
    el(
      'div',
      { class: 'two' },
      keyValueTable(
        [
          ['reward', fmtNumber(d.reward)],
          ['ppl score', fmtNumber(d.ppl)],
          ['reflection score', fmtNumber(d.reflection)],
          ['reflections counted', String(d.reflectionCount)],
          ['advantage', fmtNumber(d.advantage)],
          ['math correct', d.correct === null ? '–' : String(d.correct)],
          ['log p(reference | full response)', fmtNumber(d.logpFull)],
          ['EMA baseline used', fmtNumber(d.ema)],
          ['response tokens', d.responseTokens === null ? '–' : String(d.responseTokens)],
        ],
        { id: 'reward-components' },
      ),
      checkpointChart(d),
    ),
    el('h3', {}, 'Prompt'),
    el('pre', { class: 'prompt' }, d.prompt),
    el('h3', {}, 'Reference'),
    el('pre', { class: 'reference' }, d.reference),
    el('h3', {}, 'Response'),
    response(d),
  );
}

render(async () => {
  const query = new URLSearchParams();
  for (const k of ['split', 'iteration', 'prompt']) if (params.get(k)) query.set(k, params.get(k));
  let data = await api(`/api/runs/${id}/samples?${query}`);
  // Default view: the latest iteration's rollouts.
  if (!params.get('iteration') && data.iterations.length) {
    const latest = data.iterations.filter((i) => i.split === 'train').at(-1) ?? data.iterations.at(-1);
    params.set('split', latest.split);
    params.set('iteration', String(latest.iteration));
    history.replaceState(null, '', `${location.pathname}?${params}`);
    query.set('split', latest.split);
    query.set('iteration', String(latest.iteration));
    data = await api(`/api/runs/${id}/samples?${query}`);
  }
  const prompts = [...new Set(data.samples.map((s) => s.promptId))];
  if (params.get('prompt') && !prompts.includes(params.get('prompt'))) prompts.push(params.get('prompt'));
  const sample = params.get('sample');
  return [
    el('h1', {}, `Samples: ${data.run.name || data.run.id}`),
    pickers(data.iterations, prompts),
    data.samples.length ? table(data.samples) : el('p', { class: 'muted' }, 'No samples recorded yet.'),
    sample
      ? detailView(await api(`/api/runs/${id}/samples/${sample}`))
      : el('p', { class: 'muted' }, 'Click a row to open a sample.'),
  ];
});
