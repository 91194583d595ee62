/** causeChain (util/errors.ts): the errors an error wraps, outermost first, safe on cycles. */
import { causeChain } from '../../util/errors';

test('walks `cause` outermost first, and stops at a cycle', () => {
  const inner = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  const outer = new Error('download failed', { cause: inner });
  expect(causeChain(outer).map((e) => e.message)).toEqual(['download failed', 'connect ECONNREFUSED']);
  expect(causeChain('not an error')).toEqual([]);
  const a: { message: string; cause?: unknown } = { message: 'a' };
  a.cause = { message: 'b', cause: a };
  expect(causeChain(a)).toHaveLength(32);
});
