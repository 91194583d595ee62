/**
 * The dashboard's views on hand-made rows: durations, the audit trail, blocked periods on the timeline,
 * the segments a sample's reward counted (against the reward code's own count), and the config diff.
 */
import type { Artifact, Event, Run, Sample, StageAttempt } from '../../db/schema';
import { operaRewards } from '../../opera/reward';
import { flattenConfig } from '../../config/diff';
import { auditTrail, configDiff, runRow, sampleDetail, timelineOf } from '../../ui/views';

const at = (s: number) => new Date(Date.UTC(2026, 10, 29, 12, 0, s));

const run = (over: Partial<Run> = {}): Run => ({
  id: 'r1',
  name: 'r',
  group: null,
  status: 'running',
  config: { grpo: { iterations: 5 } },
  configHash: 'c'.repeat(64),
  codeVersion: 'abc',
  seed: 3,
  workflowId: 'r1',
  currentIteration: 2,
  summary: { evalBefore: { reward: 0.1 }, evalAfter: { reward: 0.4 } },
  error: null,
  createdAt: at(0),
  updatedAt: at(0),
  startedAt: at(10),
  finishedAt: null,
  ...over,
});

test('runRow: a live run lasts until now, a finished one until it finished', () => {
  expect(runRow(run(), at(40))).toMatchObject({ durationMs: 30_000, iterations: 5, evalBefore: 0.1, evalAfter: 0.4 });
  expect(runRow(run({ finishedAt: at(25) }), at(40)).durationMs).toBe(15_000);
  expect(runRow(run({ startedAt: null }), at(40)).durationMs).toBeNull();
});

test('auditTrail: the dataset and every weights and optimizer file, with their hashes', () => {
  const file = (kind: string, iteration: number, name: string): Artifact => ({
    id: 0,
    runId: 'r1',
    kind,
    iteration,
    name,
    uri: `file:///a/${iteration}/${name}`,
    sha256: `${kind}${iteration}${name}`,
    bytes: 10,
    createdAt: at(0),
  });
  const trail = auditTrail(run(), [
    file('dataset', 0, 'dataset.json'),
    file('checkpoint', 1, 'model.safetensors'),
    file('optimizer', 1, 'optimizer.safetensors'),
    file('rollouts', 1, 'shard-0.json'),
  ]);
  expect(trail.dataset?.sha256).toBe('dataset0dataset.json');
  expect(trail.checkpoints.map((c) => c.sha256)).toEqual([
    'checkpoint1model.safetensors',
    'optimizer1optimizer.safetensors',
  ]);
  expect(trail).toMatchObject({ configHash: 'c'.repeat(64), codeVersion: 'abc', seed: 3 });
});

test('timelineOf: a blocked period runs from the block to the retry of that stage; an open one until now', () => {
  const attempt = (n: number, status: StageAttempt['status'], end: number | null): StageAttempt => ({
    id: n,
    runId: 'r1',
    stage: 'update',
    iteration: 1,
    shard: 0,
    attempt: n,
    status,
    worker: 'w',
    providers: 'cpu',
    startedAt: at(n * 10),
    finishedAt: end === null ? null : at(end),
    durationMs: null,
    error: null,
    output: null,
    progress: null,
    taskToken: null,
  });
  const event = (id: number, type: string, s: number, stage = 'update'): Event => ({
    id,
    runId: 'r1',
    type,
    actor: 'alice',
    detail: { stage, iteration: 1, shard: 0, error: 'NaN' },
    at: at(s),
  });
  const { attempts, blocked } = timelineOf(
    [attempt(1, 'failed', 15), attempt(2, 'running', null)],
    [event(1, 'blocked', 15), event(2, 'retried', 18, 'score'), event(3, 'retried', 20), event(4, 'blocked', 30)],
    at(50),
  );
  expect(attempts.map((a) => a.endedAt)).toEqual([at(15), at(50)]);
  expect(blocked).toEqual([
    { stage: 'update/1/0', from: at(15), to: at(20), error: 'NaN', resolvedBy: 'retried by alice' },
    { stage: 'update/1/0', from: at(30), to: at(50), error: 'NaN', resolvedBy: null },
  ]);
});

describe('sampleDetail', () => {
  const reference = 'The fox is red.';
  const response = '<think>Wait, red.\n\nBut small.\n\nHmm, red fits.\n\nplain</think>The fox is red.';
  const rollouts = [
    { response, logpFull: -1.2, logpInitial: -3, logpSegments: [-2.5, -2.8, -2.0, -1.0] },
    { response: '<think>Wait</think>x', logpFull: -2, logpInitial: -2.2, logpSegments: [-2.4] },
  ];
  const { rewards, ema } = operaRewards([{ taskType: 'writing', reference, rollouts }], null);
  const sample = (i: number, over: Partial<Sample> = {}): Sample => ({
    id: i,
    runId: 'r1',
    split: 'train',
    iteration: 1,
    promptId: 'fox',
    sampleIndex: i,
    prompt: 'Describe a fox.',
    reference,
    taskType: 'writing',
    responseTokens: 20,
    reward: rewards[0]![i]!.total,
    ppl: rewards[0]![i]!.ppl,
    reflection: rewards[0]![i]!.reflection,
    reflectionCount: rewards[0]![i]!.reflectionCount,
    correct: null,
    advantage: 0,
    probFull: null,
    createdAt: at(0),
    ...rollouts[i]!,
    ...over,
  });

  test('marks exactly the segments the reward counted: keyword and a rising log-prob', () => {
    const d = sampleDetail(sample(0), {}, ema);
    expect(d.segments.map((s) => s.counted)).toEqual([true, false, true, false]);
    expect(d.segments.filter((s) => s.counted)).toHaveLength(rewards[0]![0]!.reflectionCount);
    expect(d.marksAgree).toBe(true);
    expect(d.checkpoints.map((c) => c.logp)).toEqual([-3, -2.5, -2.8, -2.0, -1.0]);
    expect(sampleDetail(sample(1), {}, ema).segments).toEqual([{ text: 'Wait', logp: -2.4, counted: false }]);
  });

  test('uses the run config keywords, and says when the marks disagree with the recorded count', () => {
    const d = sampleDetail(sample(0), { reward: { keywords: ['plain'] } }, ema);
    expect(d.segments.map((s) => s.counted)).toEqual([false, false, false, true]);
    expect(d.marksAgree).toBe(false);
  });

  test('a wrong math answer counts no reflections', () => {
    const d = sampleDetail(sample(0, { taskType: 'math', correct: false, reflectionCount: 0 }), {}, ema);
    expect(d.segments.some((s) => s.counted)).toBe(false);
    expect(d.marksAgree).toBe(true);
  });
});

test('configDiff: only the keys whose values differ, each config in order; arrays compare whole', () => {
  expect(Object.fromEntries(flattenConfig({ a: { b: 1, c: [1, 2] }, d: null, e: { f: 2 } }, ['e.f']))).toEqual({
    'a.b': 1,
    'a.c': [1, 2],
    d: null,
  });
  expect(
    configDiff([
      { seed: 1, grpo: { lr: 0.1, iterations: 2 }, keys: ['a'] },
      { seed: 2, grpo: { lr: 0.1, iterations: 2 }, keys: ['a', 'b'] },
      { seed: 1, grpo: { lr: 0.1 }, keys: ['a'] },
    ]),
  ).toEqual([
    { key: 'grpo.iterations', values: [2, 2, undefined] },
    { key: 'keys', values: [['a'], ['a', 'b'], ['a']] },
    { key: 'seed', values: [1, 2, 1] },
  ]);
});
