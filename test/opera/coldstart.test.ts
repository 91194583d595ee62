import {
  applyStops,
  candidateStops,
  perplexity,
  stepStops,
  synthesizeRows,
  synthesizeTrace,
  type TeacherGenerateOptions,
  type TeacherGeneration,
  type TeacherGenerator,
} from '../../opera/coldstart';

/**
 * A deterministic teacher: one character is one token. `script(context, n)` gives the full
 * continuation for the n-th call with that context and the log-prob of each of its characters;
 * the budget and stop strings are applied the way a real generator must (`applyStops`).
 * Every context character after the first has log-prob `contextLogp`.
 */
class ScriptedTeacher implements TeacherGenerator {
  readonly calls: { context: string; opts: TeacherGenerateOptions }[] = [];
  private readonly perContext = new Map<string, number>();
  constructor(
    private readonly script: (context: string, n: number) => { text: string; logp: number },
    private readonly contextLogp = -3,
  ) {}
  async generate(context: string, opts: TeacherGenerateOptions): Promise<TeacherGeneration> {
    this.calls.push({ context, opts });
    const n = this.perContext.get(context) ?? 0;
    this.perContext.set(context, n + 1);
    const { text, logp } = this.script(context, n);
    const cut = applyStops(text.slice(0, opts.maxNewTokens), opts.stop);
    return { ...cut, logps: Array.from(cut.text, () => logp) };
  }
  async contextLogps(text: string): Promise<number[]> {
    return Array.from(text.slice(1), () => this.contextLogp);
  }
}

describe('stop rules', () => {
  it('stops at the earliest stop string, the longest one on a tie', () => {
    expect(applyStops('ab Wait a minute Hmm', ['Hmm', 'Wait', 'Wait a minute'])).toEqual({
      text: 'ab ',
      stoppedBy: 'Wait a minute',
    });
    expect(applyStops('abc', ['x'])).toEqual({ text: 'abc', stoppedBy: null });
    expect(stepStops(['Wait', 'But'])).toEqual(['Wait', 'But', '</think>']);
    expect(candidateStops(['Wait'])).toEqual(['\nWait', '. Wait', '</think>']);
    // exp(−mean(−1, −3)) = e²
    expect(perplexity([-1, -3])).toBeCloseTo(Math.exp(2), 12);
    expect(perplexity([])).toBe(Infinity);
  });

  // Catches: the list order deciding instead of the position (a later-listed stop that occurs later
  // replacing an earlier one), a shorter stop replacing a longer one at the same position, or an empty
  // stop string (found at index 0) ending every generation at once.
  it('decides by position, then length, never by list order; ignores empty stops', () => {
    expect(applyStops('ab Wait more Hmm hmm', ['Wait', 'Hmm hmm'])).toEqual({ text: 'ab ', stoppedBy: 'Wait' });
    expect(applyStops('ab Wait more Hmm hmm', ['Hmm hmm', 'Wait'])).toEqual({ text: 'ab ', stoppedBy: 'Wait' });
    expect(applyStops('x Wait a minute', ['Wait a minute', 'Wait'])).toEqual({
      text: 'x ',
      stoppedBy: 'Wait a minute',
    });
    expect(applyStops('abc', ['', 'c'])).toEqual({ text: 'ab', stoppedBy: 'c' });
    expect(applyStops('abc', [''])).toEqual({ text: 'abc', stoppedBy: null });
  });
});

describe('synthesizeTrace', () => {
  it("appends the lowest-perplexity candidate's first paragraph, counting context tokens", async () => {
    const teacher = new ScriptedTeacher((context, n) => {
      if (context === 'Q:<think>') return { text: 'Plan it.\nWait, more.', logp: -1 }; // stops at "Wait"
      if (context.endsWith('</think>')) return { text: ' A blue fox. ', logp: -1 };
      if (context.endsWith('\n\n')) {
        // Context "Q:<think>Plan it.\n\n" is 19 characters → 18 context log-probs of −3 (sum −54).
        return [
          { text: 'Hmm, red.', logp: -0.1 }, //  9 tokens: mean (−54 − 0.9)/27 ≈ −2.033 (best alone: −0.1)
          { text: 'Wait, it is blue. But why', logp: -0.5 }, // cut at ". But": 16 tokens, (−54 − 8)/34 ≈ −1.824 ← lowest ppl
          { text: '\nWait', logp: -0.1 }, //      empty: 0 tokens, −54/18 = −3
          { text: 'But green.\n\nSecond para.', logp: -1 }, // 24 tokens, (−54 − 24)/42 ≈ −1.857
        ][n]!;
      }
      return { text: '\nSo blue.</think>junk', logp: -1 };
    });
    const result = await synthesizeTrace('Q:', 'A blue fox.', teacher, {}, [7]);
    expect(result).toEqual({
      prompt: 'Q:',
      reference: 'A blue fox.',
      trace: 'Plan it.\n\nWait, it is blue.\n\nSo blue.',
      output: '<think>Plan it.\n\nWait, it is blue.\n\nSo blue.</think>A blue fox.',
      reflections: 1,
    });
    // Calls: main step, 4 candidates, main step, answer — each with its own key.
    expect(teacher.calls.map((c) => c.opts.key)).toEqual([0, 1, 2, 3, 4, 5, 6].map((n) => [7, n]));
    expect(teacher.calls[1]!.opts).toMatchObject({
      stop: candidateStops(['Wait', 'But', 'Hmm', 'Let me think', 'However']),
      temperature: 0.6,
      topP: 0.95,
      topK: 20,
    });
    expect(teacher.calls[5]!.context).toBe('Q:<think>Plan it.\n\nWait, it is blue.');
  });

  // Catches: the full stop restored after every stopped candidate instead of only after a ". Wait"-style
  // stop (a "\nWait" or "</think>" stop cuts no sentence, so nothing is added).
  it('adds a full stop only to candidates cut at ". <guiding word>"', async () => {
    const best = async (candidate: string) => {
      const teacher = new ScriptedTeacher((context) => {
        if (context === 'Q:<think>') return { text: 'Go.\nBut', logp: -1 };
        if (context.endsWith('\n\n')) return { text: candidate, logp: -1 };
        return { text: '</think>', logp: -1 };
      });
      return (await synthesizeTrace('Q:', 'r', teacher, { candidates: 1 })).trace;
    };
    expect(await best('Hmm, red\nWait, no')).toBe('Go.\n\nHmm, red'); //  "\nWait" stop: no full stop
    expect(await best('Hmm, red</think>x')).toBe('Go.\n\nHmm, red'); //   "</think>" stop: no full stop
    expect(await best('Hmm, red. Wait, no')).toBe('Go.\n\nHmm, red.'); // ". Wait" stop: its full stop kept
  });

  // Catches: stop strings passed to the answer call (a guiding word or "</think>" would cut the answer).
  it('generates the answer without stop strings', async () => {
    const teacher = new ScriptedTeacher((context) =>
      context.endsWith('</think>')
        ? { text: 'Red. But also blue. Wait, green.</think>', logp: -1 }
        : { text: 'Think.</think>', logp: -1 },
    );
    const result = await synthesizeTrace('Q:', 'r', teacher);
    expect(teacher.calls.at(-1)!.opts.stop).toEqual([]);
    expect(result.output).toBe('<think>Think.</think>Red. But also blue. Wait, green.</think>');
  });

  it('keeps the first of equally perplexing candidates', async () => {
    const teacher = new ScriptedTeacher((context, n) => {
      if (context === 'Q:<think>') return { text: 'Go.\nBut', logp: -1 };
      if (context.endsWith('\n\n')) return { text: `C${n}.`, logp: -1 };
      return { text: '</think>', logp: -1 };
    });
    expect((await synthesizeTrace('Q:', 'r', teacher)).trace).toBe('Go.\n\nC0.');
  });

  it('caps reflections at maxReflections, then generates straight to </think>', async () => {
    // The main step never closes the reasoning: every step is "Ok." then a guiding word.
    const teacher = new ScriptedTeacher((context) => {
      if (context.endsWith('</think>')) return { text: 'Done.', logp: -1 };
      if (context.endsWith('\n\n')) return { text: 'Fine.', logp: -1 };
      return { text: 'Ok.\nWait', logp: -1 };
    });
    const result = await synthesizeTrace('Q:', 'r', teacher, { candidates: 2 });
    expect(result.reflections).toBe(20);
    // 20 main steps + 40 candidates + 1 closing step + 1 answer.
    expect(teacher.calls).toHaveLength(62);
    expect(teacher.calls[60]!.opts.stop).toEqual(['</think>']);
    // The closing step has only </think> to stop at, so "Wait" stays in the text.
    const paragraphs = result.trace.split('\n\n');
    expect(paragraphs).toHaveLength(41);
    expect(paragraphs.slice(0, 2)).toEqual(['Ok.', 'Fine.']);
    expect(paragraphs[40]).toBe('Ok.\nWait');
    expect(result.output.endsWith('</think>Done.')).toBe(true);
  });

  it('with maxReflections 0 writes the whole reasoning in one step', async () => {
    const teacher = new ScriptedTeacher((context) => ({
      text: context.endsWith('</think>') ? '4' : 'Hmm. 2+2=4.</think>',
      logp: -1,
    }));
    const result = await synthesizeTrace('Q:', '4', teacher, { maxReflections: 0 });
    expect(result).toMatchObject({ trace: 'Hmm. 2+2=4.', output: '<think>Hmm. 2+2=4.</think>4', reflections: 0 });
    expect(teacher.calls).toHaveLength(2);
  });
});

describe('synthesizeRows', () => {
  it('skips finished rows and keys each row by its index', async () => {
    const teacher = new ScriptedTeacher((context) => ({
      text: context.endsWith('</think>') ? 'x' : 'y</think>',
      logp: -1,
    }));
    const rows = ['a', 'b', 'c'].map((id) => ({ id, prompt: `${id}?`, reference: id }));
    const out = [];
    for await (const row of synthesizeRows(rows, teacher, {}, [9], new Set(['b']))) out.push(row);
    expect(out.map((r) => [r.id, r.index, r.output])).toEqual([
      ['a', 0, '<think>y</think>x'],
      ['c', 2, '<think>y</think>x'],
    ]);
    expect(teacher.calls.map((c) => c.opts.key)).toEqual([
      [9, 0, 0],
      [9, 0, 1],
      [9, 2, 0],
      [9, 2, 1],
    ]);
  });
});
