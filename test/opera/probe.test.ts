/**
 * The reward-hacking probe on hand-made responses: fillers go in as reasoning steps, and `substring`
 * matching rewards "about" and "button" as guiding words where `word` matching does not.
 */
import { PROBE_FILLERS, withFillers } from '../../opera/probe';
import { operaRewards, reflectionSegments } from '../../opera/reward';

const response = '<think>A fox.\n\nWait, it is red.</think>The red fox is quick.';

test('fillers become reasoning steps after the first one; the answer is untouched', () => {
  const probed = withFillers(response, PROBE_FILLERS.guiding);
  expect(reflectionSegments(probed)).toEqual(['A fox.', 'Wait, let me think.', 'But hmm.', 'Wait, it is red.']);
  expect(probed.endsWith('</think>The red fox is quick.')).toBe(true);
  expect(withFillers('no think block', PROBE_FILLERS.guiding)).toBe('no think block');
});

test('substring matching rewards "button" and "attribute" as guiding words; word matching does not', () => {
  const probed = withFillers(response, PROBE_FILLERS.substringOnly);
  // Every step raises the reference log-prob, so any step with a keyword counts.
  const rollout = { response: probed, logpFull: -1, logpInitial: -4, logpSegments: [-3.5, -3, -2.5, -2] };
  const group = [{ taskType: 'writing', reference: 'The red fox is quick.', rollouts: [rollout] }];
  const word = operaRewards(group, null, { keywordMatch: 'word' }).rewards[0]![0]!;
  const substring = operaRewards(group, null, { keywordMatch: 'substring' }).rewards[0]![0]!;
  expect(word.reflectionCount).toBe(1); // "Wait, it is red."
  expect(substring.reflectionCount).toBe(3); // + "button", "attribute"
  expect(substring.total).toBeGreaterThan(word.total);
  // "about" is not one of them: no default keyword is inside it.
  const about = { ...rollout, response: withFillers(response, ['Think about it.', 'Think about it.']) };
  const aboutGroup = [{ ...group[0]!, rollouts: [about] }];
  expect(operaRewards(aboutGroup, null, { keywordMatch: 'substring' }).rewards[0]![0]!.reflectionCount).toBe(1);
});
