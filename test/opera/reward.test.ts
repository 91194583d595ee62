import {
  DEFAULT_OPERA_REWARD_OPTIONS,
  exactMatch,
  finalAnswer,
  mathAnswer,
  mathCorrect,
  operaRewards,
  reflectionSegments,
  scoringContexts,
  type OperaGroup,
} from '../../opera/reward';

describe('reflectionSegments', () => {
  it('splits the first closed think block on blank lines, stripping and dropping empty pieces', () => {
    expect(reflectionSegments('<think>\n a \n\n\n\nb\n\n  \n\nc </think>tail<think>x</think>')).toEqual([
      'a',
      'b',
      'c',
    ]);
    expect(reflectionSegments('pre <think>only</think>')).toEqual(['only']);
  });
  it('has no segments without a closed think block', () => {
    expect(reflectionSegments('no think')).toEqual([]);
    expect(reflectionSegments('<think>open only')).toEqual([]);
    expect(reflectionSegments('</think> then <think>')).toEqual([]);
    expect(reflectionSegments('<think> \n\n </think>')).toEqual([]);
    // Catches: a missing `<think>` check (a search from index −1 + 7 would find this `</think>`).
    expect(reflectionSegments('no open tag here </think> tail')).toEqual([]);
  });
  it('gives the scorer its contexts in order', () => {
    expect(scoringContexts('P:', '<think>a\n\nb</think>ans')).toEqual({
      full: 'P:<think>a\n\nb</think>ans',
      initial: 'P:<think>',
      segments: ['P:<think>a\n\n', 'P:<think>a\n\nb\n\n'],
    });
  });
});

describe('mathAnswer', () => {
  it('takes the last \\boxed{…} outside the think block, non-greedily', () => {
    expect(mathAnswer('<think>\\boxed{1}</think>so \\boxed{6} or \\boxed{7}.')).toBe('7');
    expect(mathAnswer('\\boxed{7}}')).toBe('7');
    expect(mathAnswer('<think>\\boxed{7}</think> 8 ')).toBe(' 8 ');
    expect(mathCorrect('so \\boxed{ 7 }', '7\n')).toBe(true);
    expect(mathCorrect('\\boxed{7.0}', '7')).toBe(false);
  });
  // Catches: a think-block pattern that stops at whitespace, leaving a multi-line think block (and the
  // boxed guess inside it) in the answer text.
  it('removes think blocks that span lines and spaces', () => {
    expect(mathAnswer('<think>Try 3+4.\n\nSo \\boxed{7}, maybe.</think>The answer is 8.')).toBe('The answer is 8.');
    expect(mathCorrect('<think>a \\boxed{7}\nb</think> 8 ', '8')).toBe(true);
  });
});

// Batch 1: one writing group of two rollouts.
//  A: segments ["First idea.", "Wait, check again."]; full −1, initial −2, segments −1.5, −1.0
//  B: segments ["Hmm, maybe."];                      full −3, initial −2, segment −2.5
// Raw values −1 −2 −1.5 −1 −3 −2 −2.5: sum −13, 7 values → b = ema = −13/7.
// Smoothing v' = 0.8·v + 0.2·ema keeps order and scales differences by 0.8.
// ppl: full'_A > full'_B → A 1/1 = 1, B 0/1 = 0.
// reflection A: "First idea." has no keyword; "Wait, …": 0.8·(−1.0 − (−1.5)) = 0.4 > 0 → count 1.
//   total A = 0.3·1 + 0.7·tanh(0.5).
// reflection B: "Hmm, …" but 0.8·(−2.5 − (−2)) = −0.4 ≤ 0 → count 0; total B = 0.
const batch1: OperaGroup[] = [
  {
    taskType: 'writing',
    reference: 'ref',
    rollouts: [
      {
        response: '<think>First idea.\n\nWait, check again.</think>A',
        logpFull: -1,
        logpInitial: -2,
        logpSegments: [-1.5, -1.0],
      },
      { response: '<think>Hmm, maybe.</think>B', logpFull: -3, logpInitial: -2, logpSegments: [-2.5] },
    ],
  },
];

describe('operaRewards', () => {
  it('scores the first batch and sets the EMA to the batch mean', () => {
    const { rewards, ema } = operaRewards(batch1, null);
    expect(ema).toBeCloseTo(-13 / 7, 12);
    const [a, b] = rewards[0]!;
    expect(a!.ppl).toBe(1);
    expect(a!.reflectionCount).toBe(1);
    expect(a!.reflection).toBeCloseTo(Math.tanh(0.5), 12);
    expect(a!.total).toBeCloseTo(0.3 + 0.7 * Math.tanh(0.5), 12); // ≈ 0.623482
    expect(a!.correct).toBeUndefined();
    expect(b).toEqual({ total: 0, ppl: 0, reflection: 0, reflectionCount: 0 });
  });

  it('updates the EMA with alpha on later batches', () => {
    // Batch 2: one rollout without think: values −1 and −3 → b = −2.
    // ema = 0.1·(−2) + 0.9·(−13/7) = −0.2 − 11.7/7 ≈ −1.8714286. G = 1 → ppl 1, no segments → total 0.3.
    const { rewards, ema } = operaRewards(
      [
        {
          taskType: 'writing',
          reference: 'r',
          rollouts: [{ response: 'plain', logpFull: -1, logpInitial: -3, logpSegments: [] }],
        },
      ],
      -13 / 7,
    );
    expect(ema).toBeCloseTo(-0.2 - 11.7 / 7, 12);
    expect(rewards[0]![0]).toEqual({ total: 0.3, ppl: 1, reflection: 0, reflectionCount: 0 });
  });

  it('applies the smoothing: with emaMix = 1 every value equals the EMA, so no rank and no gain', () => {
    const { rewards } = operaRewards(batch1, null, { emaMix: 1 });
    expect(rewards[0]!.map((r) => [r.ppl, r.reflectionCount])).toEqual([
      [0, 0],
      [0, 0],
    ]);
  });

  // Catches: smoothing applied to one side of a comparison only — the reflection baseline left raw while
  // segments are smoothed (or the reverse), or a rollout's raw full ranked against the others' smoothed
  // fulls. At the default mix 0.2 each of those changes a count or a rank in this batch. (Smoothing every
  // value with the same EMA is an increasing affine map, so it keeps every rank and sign: the results
  // equal the unsmoothed ones, which the last assertion checks.)
  it('smooths every value with the one batch EMA at the default mix', () => {
    const rollout = (response: string, logpFull: number, logpInitial: number, logpSegments: number[]) => ({
      response,
      logpFull,
      logpInitial,
      logpSegments,
    });
    const group: OperaGroup = {
      taskType: 'writing',
      reference: 'r',
      rollouts: [
        rollout('<think>Wait, a.</think>', -10, -10, [-10.5]), // falls 0.5
        rollout('<think>Wait, b.</think>', -10, -10, [-9.5]), //  rises 0.5
        rollout('plain', -0.2, -0.2, []),
        rollout('plain', -0.2, -0.2, []),
      ],
    };
    // Ten raw values, sum −60.8 → ema = −6.08; v' = 0.8·v − 1.216: −10 → −9.216, −10.5 → −9.616,
    // −9.5 → −8.816, −0.2 → −1.376.
    const { rewards, ema } = operaRewards([group], null);
    expect(ema).toBeCloseTo(-6.08, 12);
    // Rollout 0: −9.616 − (−9.216) = −0.4 → 0 (raw baseline: −9.616 − (−10) = +0.384 → 1).
    // Rollout 1: −8.816 − (−9.216) = +0.4 → 1 (raw segment: −9.5 − (−9.216) = −0.284 → 0).
    expect(rewards[0]!.map((r) => r.reflectionCount)).toEqual([0, 1, 0, 0]);
    // ppl: below −1.376 are the two −9.216 → 2/3 (raw −0.2 against smoothed others: all 3 below → 1).
    expect(rewards[0]!.map((r) => r.ppl)).toEqual([0, 0, 2 / 3, 2 / 3]);
    expect(rewards[0]![1]!.total).toBeCloseTo(0.7 * Math.tanh(0.5), 12);
    expect(rewards[0]![2]!.total).toBeCloseTo(0.2, 12);
    expect(operaRewards([group], null, { emaMix: 0 }).rewards).toEqual(rewards);
  });

  it('ranks ties equally (count strictly below) over G − 1', () => {
    // fulls −1, −2, −1, −3: below −1 are −2 and −3 → 2/3; below −2 is −3 → 1/3; below −3 none → 0.
    const rollouts = [-1, -2, -1, -3].map((f) => ({ response: 'x', logpFull: f, logpInitial: -5, logpSegments: [] }));
    const { rewards } = operaRewards([{ taskType: 'writing', reference: 'r', rollouts }], null, {
      pplWeight: 1,
      reflectionWeight: 0,
    });
    expect(rewards[0]!.map((r) => r.ppl)).toEqual([2 / 3, 1 / 3, 2 / 3, 0]);
    expect(rewards[0]!.map((r) => r.total)).toEqual([2 / 3, 1 / 3, 2 / 3, 0]);
  });

  // One rollout per segment kind; each segment's log-prob rises (−2 → −1), so only the keyword decides.
  const oneSegment = (segment: string): OperaGroup => ({
    taskType: 'writing',
    reference: 'r',
    rollouts: [{ response: `<think>${segment}</think>ok`, logpFull: -1, logpInitial: -2, logpSegments: [-1] }],
  });
  const counts = (segments: string[], keywordMatch: 'word' | 'substring') =>
    operaRewards(segments.map(oneSegment), null, { keywordMatch }).rewards.map((g) => g[0]!.reflectionCount);

  it('matches keywords as whole words by default, case-insensitively', () => {
    const segs = ['wait, no.', 'On the button.', 'Awaiting it.', 'Think about it.', 'Wait a minute!', 'HOWEVER'];
    expect(DEFAULT_OPERA_REWARD_OPTIONS.keywordMatch).toBe('word');
    expect(counts(segs, 'word')).toEqual([1, 0, 0, 0, 1, 1]);
    // Substring (the reference): "button" contains "but", "Awaiting" contains "wait".
    // ("about" does not contain "but": a-b-o-u-t, so it counts in neither mode.)
    expect(counts(segs, 'substring')).toEqual([1, 1, 1, 0, 1, 1]);
  });

  // Catches: keywords put into the word pattern unescaped (or with their metacharacters dropped).
  it('matches keywords with regex metacharacters literally', () => {
    const count = (segment: string) =>
      operaRewards([oneSegment(segment)], null, { keywords: ['e.g.', 'Hmm?'] }).rewards[0]![0]!.reflectionCount;
    expect(count('See e.g. this.')).toBe(1);
    expect(count('Hmm? Odd.')).toBe(1);
    expect(count('exgx marks it.')).toBe(0); // an unescaped "." would match any character
    expect(count('eg without dots.')).toBe(0);
    expect(count('Hmm. Fine.')).toBe(0); //   an unescaped "?" would make the second m optional and match "Hm"/"Hmm"
  });

  it('G = 1 gets ppl 1 and counts every rising reflection', () => {
    // initial −3 → seg −2 (Wait, +) → seg −2.5 (But, −) → seg −1 (However, +): count 2, tanh(1).
    const response = '<think>Wait, one.\n\nBut two.\n\nHowever, three.</think>done';
    const { rewards } = operaRewards(
      [
        {
          taskType: 'writing',
          reference: 'r',
          rollouts: [{ response, logpFull: -1, logpInitial: -3, logpSegments: [-2, -2.5, -1] }],
        },
      ],
      null,
    );
    expect(rewards[0]![0]!.reflectionCount).toBe(2);
    expect(rewards[0]![0]!.total).toBeCloseTo(0.3 + 0.7 * Math.tanh(1), 12);
  });

  // Catches: the reflection baseline `last` advancing only on counted reflections (or only on keyword
  // segments) instead of on every segment, as the spec says (`last = seg'_j` always).
  it('moves the reflection baseline on every segment, counted or not', () => {
    const rollout = (response: string, logpInitial: number, logpSegments: number[]) => ({
      response,
      logpFull: -1,
      logpInitial,
      logpSegments,
    });
    const { rewards } = operaRewards(
      [
        {
          taskType: 'writing',
          reference: 'r',
          rollouts: [
            // initial −3 → "Plain idea." −1 (no keyword; last = −1) → "Wait, …" −2: −2 − (−1) < 0 → count 0.
            // Baseline kept at −3 because "Plain idea." was not counted: −2 > −3 → count 1 (wrong).
            rollout('<think>Plain idea.\n\nWait, again.</think>a', -3, [-1, -2]),
            // initial −1 → "But no." −3 (keyword, falls: not counted; last = −3) → "Wait, …" −2: rises → count 1.
            // Baseline kept at −1 after the uncounted "But no.": −2 < −1 → count 0 (wrong).
            rollout('<think>But no.\n\nWait, better.</think>b', -1, [-3, -2]),
          ],
        },
      ],
      null,
    );
    // Smoothing scales every difference by 0.8 and keeps its sign, so the raw walk above decides.
    expect(rewards[0]!.map((r) => r.reflectionCount)).toEqual([0, 1]);
    expect(rewards[0]![1]!.reflection).toBeCloseTo(Math.tanh(0.5), 12);
  });

  it('scores math by exact match of the last boxed answer, else the text outside the think block', () => {
    const r = (response: string, logpSegments: number[] = []) => ({
      response,
      logpFull: -1,
      logpInitial: -2,
      logpSegments,
    });
    const { rewards } = operaRewards(
      [
        {
          taskType: 'math',
          reference: ' 7 ',
          rollouts: [
            r('<think>Wait, 3+4.</think>So \\boxed{7}.', [-1.5]), // boxed, right; reflection rises → count 1
            r('<think>x</think> 7\n', [-3]), //                         unboxed, right after trim; x falls
            r('<think>\\boxed{7}</think>\\boxed{8}', [-1]), //          wrong: the think block is removed first
            r('<think>\\boxed{7}</think>', [-1]), //                    wrong: nothing left
          ],
        },
      ],
      null,
    );
    const [boxed, unboxed, wrong, empty] = rewards[0]!;
    // All four fulls are −1 (tied) → ppl 0 for the right ones; components zeroed for wrong ones.
    expect(boxed).toEqual({ total: 1, ppl: 0, reflection: Math.tanh(0.5), reflectionCount: 1, correct: true });
    expect(unboxed).toEqual({ total: 1, ppl: 0, reflection: 0, reflectionCount: 0, correct: true });
    expect(wrong).toEqual({ total: 0, ppl: 0, reflection: 0, reflectionCount: 0, correct: false });
    expect(empty!.correct).toBe(false);
  });

  it('rejects a segment-count mismatch, naming group and rollout', () => {
    const groups: OperaGroup[] = [
      batch1[0]!,
      {
        taskType: 'writing',
        reference: 'r',
        rollouts: [{ response: '<think>a\n\nb</think>', logpFull: 0, logpInitial: 0, logpSegments: [0] }],
      },
    ];
    expect(() => operaRewards(groups, null)).toThrow(
      'operaRewards: group 1 rollout 0: 1 segment log-probs but the response has 2 reflection segments',
    );
  });

  it('rejects non-finite log-probs and EMA state, which would poison the carried baseline', () => {
    const group = (logpSegments: number[]): OperaGroup[] => [
      {
        taskType: 'writing',
        reference: 'r',
        rollouts: [{ response: '<think>a</think>', logpFull: -1, logpInitial: -1, logpSegments }],
      },
    ];
    expect(() => operaRewards(group([NaN]), null)).toThrow(
      'operaRewards: group 0 rollout 0: logpSegments[0] is NaN, not a finite log-probability',
    );
    // Catches: the error naming the wrong field (or none) for a bad full or initial log-prob.
    const bad = (logpFull: number, logpInitial: number): OperaGroup[] => [
      {
        taskType: 'writing',
        reference: 'r',
        rollouts: [
          { response: 'x', logpFull: -1, logpInitial: -1, logpSegments: [] },
          { response: 'y', logpFull, logpInitial, logpSegments: [] },
        ],
      },
    ];
    expect(() => operaRewards(bad(-Infinity, -1), null)).toThrow(
      'operaRewards: group 0 rollout 1: logpFull is -Infinity, not a finite log-probability',
    );
    expect(() => operaRewards(bad(-1, NaN), null)).toThrow(
      'operaRewards: group 0 rollout 1: logpInitial is NaN, not a finite log-probability',
    );
    expect(() => operaRewards(group([-1]), Infinity)).toThrow('EMA state is Infinity');
  });

  it('leaves the EMA alone for an empty batch', () => {
    expect(operaRewards([], null)).toEqual({ rewards: [], ema: null });
    expect(operaRewards([{ taskType: 'writing', reference: 'r', rollouts: [] }], 0.5)).toEqual({
      rewards: [[]],
      ema: 0.5,
    });
  });
});

test('exactMatch: the final answer outside every think block, for every task type', () => {
  expect(finalAnswer('<think>a\n\nb</think> The fox is red. ')).toBe('The fox is red.');
  expect(exactMatch('writing', '<think>x</think>The fox is red.', 'The fox is red.')).toBe(true);
  expect(exactMatch('writing', '<think>x</think>The fox is red!', 'The fox is red.')).toBe(false);
  expect(exactMatch('writing', 'The fox <think>hm</think>is red.', 'The fox is red.')).toBe(true);
  expect(exactMatch('math', '<think>3+4=7</think>\\boxed{7}', '7')).toBe(true);
  expect(exactMatch('math', '<think>3+4=7</think>7', '7')).toBe(true);
  expect(exactMatch('math', '<think>x</think>\\boxed{8}', '7')).toBe(false);
});
