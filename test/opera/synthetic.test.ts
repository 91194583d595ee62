import { DEFAULT_OPERA_REWARD_OPTIONS, mathAnswer, operaRewards, reflectionSegments } from '../../opera/reward';
import { SYNTHETIC_LIMITS, coldStartSet, sftRowSchema, syntheticTasks } from '../../opera/synthetic';
import { mulberry32, shuffle } from '../../util/random';

describe('seeded randomness', () => {
  // Catches: a changed constant or operator in the PRNG (the task set of a seed would silently change
  // between versions). Expected words from an independent transcription of the C reference
  // (z = state += 0x6D2B79F5; z = (z ^ z>>15)·(z | 1); z ^= z + (z ^ z>>7)·(z | 61); z ^ z>>14) in Python.
  it('mulberry32 matches the reference generator', () => {
    const words = (seed: number) => {
      const r = mulberry32(seed);
      return Array.from({ length: 4 }, () => r() * 4294967296);
    };
    expect(words(0)).toEqual([1144304738, 1416247, 958946056, 627933444]);
    expect(words(1)).toEqual([2693262067, 11749833, 2265367787, 4213581821]);
    expect(words(42)).toEqual([2581720956, 1925393290, 3661312704, 2876485805]);
  });

  // Catches: an off-by-one in Fisher–Yates (j drawn from [0, i) or [0, i − 1), or an extra draw at i = 0,
  // which shifts every later draw of the same generator).
  it('shuffle is Fisher–Yates: one draw per position from the end, j in [0, i]', () => {
    const scripted = (values: number[]) => {
      let k = 0;
      const random = () => values[k++]!;
      return { random, draws: () => k };
    };
    // [0,1,2,3,4] with draws .5 .1 .9 .3: i=4 j=⌊2.5⌋=2 → [0,1,4,3,2]; i=3 j=⌊0.4⌋=0 → [3,1,4,0,2];
    // i=2 j=⌊2.7⌋=2 (stays); i=1 j=⌊0.6⌋=0 → [1,3,4,0,2].
    const s = scripted([0.5, 0.1, 0.9, 0.3, 0.7]);
    expect(shuffle([0, 1, 2, 3, 4], s.random)).toEqual([1, 3, 4, 0, 2]);
    expect(s.draws()).toBe(4);
    // Draws just below 1 pick j = i every time: nothing moves.
    expect(shuffle(['a', 'b', 'c'], () => 0.999)).toEqual(['a', 'b', 'c']);
    const input = [1, 2];
    expect(shuffle(input, () => 0)).toEqual([2, 1]);
    expect(input).toEqual([1, 2]); // a new array; the input is untouched
  });
});

describe('syntheticTasks', () => {
  it('is reproducible from its seed and gives the requested mix', () => {
    const a = syntheticTasks({ writing: 12, math: 7, seed: 3 });
    expect(syntheticTasks({ writing: 12, math: 7, seed: 3 })).toEqual(a);
    expect(syntheticTasks({ writing: 12, math: 7, seed: 4 })).not.toEqual(a);
    expect(a.filter((r) => r.taskType === 'writing')).toHaveLength(12);
    expect(a.filter((r) => r.taskType === 'math')).toHaveLength(7);
    expect(new Set(a.map((r) => r.id)).size).toBe(19);
  });

  it('caps each family at its number of distinct tasks', () => {
    const all = syntheticTasks({ writing: 1000, math: 1000, seed: 0 });
    expect(all).toHaveLength(SYNTHETIC_LIMITS.writing + SYNTHETIC_LIMITS.math); // 64 + 100
    expect(new Set(all.map((r) => `${r.prompt}\u0000${r.reference}`)).size).toBe(all.length);
  });

  it('builds math tasks with exact answers and writing tasks whose trace names the reference words', () => {
    for (const row of syntheticTasks({ writing: 64, math: 100, seed: 1 })) {
      expect(row.prompt.length).toBeLessThanOrEqual(30);
      if (row.taskType === 'math') {
        const [, a, b] = /^What is (\d)\+(\d)\?$/.exec(row.prompt)!;
        expect(row.reference).toBe(String(Number(a) + Number(b)));
      } else {
        const [, color, animal] = /^Describe a (\w+) (\w+)\.$/.exec(row.prompt)!;
        const [, trait] = new RegExp(`^The ${color} ${animal} is (\\w+)\\.$`).exec(row.reference)!;
        // The trait is not in the prompt; the reflection step of the trace supplies it.
        expect(row.prompt).not.toContain(trait!);
        const segments = reflectionSegments(`<think>${row.trace}</think>`);
        expect(segments).toHaveLength(3);
        expect(segments[2]).toMatch(new RegExp(`^But .*${trait}`));
      }
    }
  });
});

describe('coldStartSet', () => {
  const rows = syntheticTasks({ writing: 3, math: 3, seed: 2 });

  it('wraps each trace in <think> and ends with the answer (boxed for math), in a seeded order', () => {
    const sft = coldStartSet(rows, 5);
    expect(coldStartSet(rows, 5)).toEqual(sft);
    expect(sft.map((r) => r.id).sort()).toEqual(rows.map((r) => r.id).sort());
    for (const s of sft) {
      const row = rows.find((r) => r.id === s.id)!;
      expect(s.response).toBe(
        `<think>${row.trace}</think>${row.taskType === 'math' ? `\\boxed{${row.reference}}` : row.reference}`,
      );
      expect(s.response.length).toBeLessThanOrEqual(100);
      if (row.taskType === 'math') expect(mathAnswer(s.response)).toBe(row.reference);
    }
  });

  it('uses a ready response as is and skips rows without SFT fields', () => {
    const sft = coldStartSet(
      [
        { id: 'r', prompt: 'p', reference: 'x', taskType: 'writing', response: 'ready', trace: 'ignored' },
        { id: 'n', prompt: 'q', reference: 'y', taskType: 'writing' },
      ],
      0,
    );
    expect(sft).toEqual([{ id: 'r', prompt: 'p', response: 'ready' }]);
  });

  // Catches: an empty response taken as ready, a blank trace making `<think></think>answer`, or an untrimmed
  // trace leaking its surrounding whitespace into the think block.
  it('falls back from an empty response to the trace, trims the trace, and skips blank traces', () => {
    const sft = coldStartSet(
      [
        { id: 'e', prompt: 'p', reference: 'x', taskType: 'writing', response: '', trace: '\n A.\n\nB. \n' },
        { id: 'b', prompt: 'q', reference: 'y', taskType: 'writing', trace: ' \n\n ' },
      ],
      0,
    );
    expect(sft).toEqual([{ id: 'e', prompt: 'p', response: '<think>A.\n\nB.</think>x' }]);
  });

  // Catches: the SFT row schema accepting empty fields (or rejecting long ones).
  it('sftRowSchema requires non-empty id, prompt and response', () => {
    const row = { id: 'id-1', prompt: 'A long prompt.', response: '<think>t</think>a' };
    expect(sftRowSchema.parse(row)).toEqual(row);
    for (const key of ['id', 'prompt', 'response'] as const)
      expect(sftRowSchema.safeParse({ ...row, [key]: '' }).success).toBe(false);
  });

  it('gives a correct cold-start math response the full reward and counts its reflection', () => {
    // The trace "a+b=s.\n\nWait, check: …" has 2 segments; with rising log-probs the "Wait" one counts.
    const math = rows.find((r) => r.taskType === 'math')!;
    const response = coldStartSet([math], 0)[0]!.response;
    const { rewards } = operaRewards(
      [
        {
          taskType: 'math',
          reference: math.reference,
          rollouts: [{ response, logpFull: -1, logpInitial: -3, logpSegments: [-2, -1] }],
        },
      ],
      null,
      DEFAULT_OPERA_REWARD_OPTIONS,
    );
    expect(rewards[0]![0]).toMatchObject({ total: 1, correct: true, reflectionCount: 1 });
  });
});
