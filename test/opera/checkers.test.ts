import { join } from 'node:path';
import { prepareDataset } from '../../config/dataset';
import { loadRunConfig } from '../../config/load';
import { hiddenCheck } from '../../opera/checkers';
import { ANIMAL_TRAITS, syntheticTasks } from '../../opera/synthetic';

const fox = { prompt: 'Describe a red fox.', reference: 'The red fox is quick.', taskType: 'writing' };
const math = { prompt: 'What is 3+4?', reference: '7', taskType: 'math' };
const think = (trace: string, answer: string) => `<think>${trace}</think>${answer}`;

describe('hiddenCheck: synthetic writing', () => {
  it.each([
    ['the reference itself', 'The red fox is quick.'],
    ['after a think block', think('A fox.\n\nBut a fox is quick.', 'The red fox is quick.')],
    ['other words between and around', 'Well, the RED little fox is very Quick indeed!'],
    ['no sentence at all', 'red fox quick'],
  ])('passes %s', (_, response) => expect(hiddenCheck(fox, response)).toBe(true));

  it.each([
    ['a wrong trait', 'The red fox is wise.'],
    ['the wrong order', 'The quick red fox.'],
    ['colour after the animal', 'The fox is red and quick.'],
    ['the trait only inside <think>', think('But a fox is quick.', 'The red fox.')],
    ['a missing colour', 'The fox is quick.'],
    ['a missing animal', 'The red one is quick.'],
    ['the trait only inside a longer word', 'The red fox is quickest.'],
    ['the colour only inside a longer word', 'The reddish fox is quick.'],
    ['an empty answer', think('The red fox is quick.', '')],
  ])('fails %s', (_, response) => expect(hiddenCheck(fox, response)).toBe(false));

  it("checks every animal's own trait, which the prompt never states", () => {
    for (const [animal, trait] of ANIMAL_TRAITS) {
      const row = {
        prompt: `Describe a gold ${animal}.`,
        reference: `The gold ${animal} is ${trait}.`,
        taskType: 'writing',
      };
      expect(row.prompt).not.toContain(trait);
      expect(hiddenCheck(row, `A gold ${animal}, ${trait}.`)).toBe(true);
      for (const [other, wrong] of ANIMAL_TRAITS)
        if (other !== animal) expect(hiddenCheck(row, `The gold ${animal} is ${wrong}.`)).toBe(false);
    }
  });

  it('knows every synthetic task, and its reference passes', () => {
    for (const row of syntheticTasks({ writing: 64, math: 100, seed: 3 }))
      expect(hiddenCheck(row, row.reference)).toBe(true);
  });

  it.each([
    ['an unknown animal', { ...fox, prompt: 'Describe a red lion.' }],
    ['a prompt not of the synthetic form', { ...fox, prompt: 'Write a poem about a red fox.' }],
    ['a prompt with more around it', { ...fox, prompt: 'Describe a red fox. Be brief.' }],
    ['another task type', { ...fox, taskType: 'poetry' }],
  ])('has no check for %s (null)', (_, row) => expect(hiddenCheck(row, 'The red fox is quick.')).toBeNull());
});

describe('hiddenCheck: synthetic math', () => {
  it.each([
    ['a boxed answer', '\\boxed{7}'],
    ['a boxed answer after a think block', think('3+4=7.', 'So \\boxed{7}')],
    ['a bare answer', ' 7 '],
  ])('passes %s', (_, response) => expect(hiddenCheck(math, response)).toBe(true));

  it.each([
    ['a wrong answer', '\\boxed{8}'],
    ['the answer only inside <think>', think('\\boxed{7}', '')],
    ['extra words around a bare answer', 'it is 7'],
  ])('fails %s', (_, response) => expect(hiddenCheck(math, response)).toBe(false));

  it('has no check for a math prompt not of the synthetic form (null)', () =>
    expect(hiddenCheck({ ...math, prompt: 'Compute 3 plus 4.' }, '\\boxed{7}')).toBeNull());
});

describe('held-out combinations', () => {
  // Each (colour, animal) pair is one row and rows are split, so the demo evaluates the model on
  // colour × animal pairs it never trained on: it can only pass by knowing the animal's trait.
  it("the demo config's split puts no eval (colour, animal) pair in train, and has enough eval prompts", async () => {
    const config = loadRunConfig(join(__dirname, '..', '..', 'configs', 'demo.yaml'));
    const { train, eval: held } = await prepareDataset(config.data, config.seed);
    const pair = (prompt: string) => /^Describe an? (\w+) (\w+)\.$/.exec(prompt)?.slice(1).join(' ');
    const trainPairs = new Set(train.map((r) => pair(r.prompt)).filter((p) => p !== undefined));
    const evalPairs = held.filter((r) => r.taskType === 'writing').map((r) => pair(r.prompt)!);
    expect(evalPairs.length).toBeGreaterThan(0);
    for (const p of evalPairs) expect(trainPairs).not.toContain(p);
    expect(config.eval.prompts).toBeGreaterThanOrEqual(48);
    expect(held.length).toBeGreaterThanOrEqual(config.eval.prompts);
    // Every prompt fits data.maxPromptTokens even with a byte per character and a BOS (so no filter applies).
    for (const r of [...train, ...held])
      expect(Buffer.byteLength(r.prompt) + 1).toBeLessThanOrEqual(config.data.maxPromptTokens);
  });
});
