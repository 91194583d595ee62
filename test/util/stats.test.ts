/**
 * Welch's t-test against values computed independently: the two-sided tail of Student's t by Simpson
 * integration of its density (Python, float64), and Welch's t and degrees of freedom by hand.
 */
import { incompleteBeta, logGamma, median, studentTwoSidedP, welchTTest } from '../../util/stats';

test('logGamma and the incomplete beta on closed forms', () => {
  expect(logGamma(5)).toBeCloseTo(Math.log(24), 12);
  expect(logGamma(0.5)).toBeCloseTo(Math.log(Math.sqrt(Math.PI)), 12);
  // I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 − (1 − x)^b.
  expect(incompleteBeta(0.3, 1, 1)).toBeCloseTo(0.3, 12);
  expect(incompleteBeta(0.7, 3, 1)).toBeCloseTo(0.343, 12);
  expect(incompleteBeta(0.2, 1, 4)).toBeCloseTo(1 - 0.8 ** 4, 12);
});

test("two-sided p of Student's t", () => {
  expect(studentTwoSidedP(2.0, 10)).toBeCloseTo(0.0733880347834844, 9);
  expect(studentTwoSidedP(-1.0, 3)).toBeCloseTo(0.39100221864605805, 9);
  expect(studentTwoSidedP(3.5, 7.3)).toBeCloseTo(0.00934313853113112, 9);
  // The reference integral stops at |t| = 2000, which leaves ~1e-5 of this heavy tail out.
  expect(studentTwoSidedP(0.5, 1.5)).toBeCloseTo(0.6805586818314387, 4);
  expect(studentTwoSidedP(0, 4)).toBe(1);
});

test("Welch's t, degrees of freedom and p", () => {
  const r = welchTTest([1, 2, 3, 4], [2, 4, 6, 8, 10]);
  // Python's statistics module: t = (2.5 − 6) / sqrt(1.6667/4 + 10/5), df by Welch–Satterthwaite.
  expect(r.t).toBeCloseTo(-2.2514363231593695, 12);
  expect(r.df).toBeCloseTo(5.520787746170677, 12);
  expect(r.p).toBe(studentTwoSidedP(r.t, r.df));
  expect(r.p).toBeGreaterThan(0.05);
  expect(r.p).toBeLessThan(0.1);
  expect(welchTTest([1, 1], [2, 2]).p).toBe(0);
  expect(Number.isNaN(welchTTest([1, 1], [1, 1]).p)).toBe(true);
  expect(() => welchTTest([1], [1, 2])).toThrow('needs 2+ values per sample');
});

test('median: the middle value, or the mean of the middle two; the input is not reordered', () => {
  const xs = [5, 1, 4];
  expect(median(xs)).toBe(4);
  expect(xs).toEqual([5, 1, 4]);
  expect(median([3, 1, 4, 2])).toBe(2.5);
});
