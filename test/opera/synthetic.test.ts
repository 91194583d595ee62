import { DEFAULT_OPERA_REWARD_OPTIONS, mathAnswer, operaRewards, reflectionSegments } from '../../opera/reward';
import { SYNTHETIC_LIMITS, coldStartSet, syntheticTasks } from '../../opera/synthetic';

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
      expect(s.response).toBe(`<think>${row.trace}</think>${row.taskType === 'math' ? `\\boxed{${row.reference}}` : row.reference}`);
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

  it('gives a correct cold-start math response the full reward and counts its reflection', () => {
    // The trace "a+b=s.\n\nWait, check: …" has 2 segments; with rising log-probs the "Wait" one counts.
    const math = rows.find((r) => r.taskType === 'math')!;
    const response = coldStartSet([math], 0)[0]!.response;
    const { rewards } = operaRewards(
      [{ taskType: 'math', reference: math.reference, rollouts: [{ response, logpFull: -1, logpInitial: -3, logpSegments: [-2, -1] }] }],
      null,
      DEFAULT_OPERA_REWARD_OPTIONS,
    );
    expect(rewards[0]![0]).toMatchObject({ total: 1, correct: true, reflectionCount: 1 });
  });
});
