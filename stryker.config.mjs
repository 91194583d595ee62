// Mutation testing of the algorithm (opera/), config/, util/ and the gradient rules (engine/autodiff.ts,
// grad-rules.ts): `npm run mutate`. Slow (17–22 minutes on 2 cores for opera/ and autodiff.ts alone), so not
// part of `npm test` or CI. Runs the unit tests of test/opera, test/engine, test/config and test/util
// through their own jest config (no globalSetup: no PostgreSQL or Temporal needed). Reports go to
// reports/mutation/ (git-ignored).
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  mutate: ['opera/**/*.ts', 'config/**/*.ts', 'util/**/*.ts', 'engine/autodiff.ts', 'engine/grad-rules.ts'],
  testRunner: 'jest',
  jest: { projectType: 'custom', configFile: 'jest.mutate.config.js', enableFindRelatedTests: true },
  // Mutants that do not type-check are discarded before any test runs (cheaper than running them).
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.mutate.json',
  coverageAnalysis: 'perTest',
  // Stryker splits `concurrency` between checker and test-runner processes (half each) and hands the
  // checkers' share to test runners only when every mutant is checked, which here is near the end. On
  // 2 cores, 4 gives 2 jest runners (one per core) plus 2 mostly idle checkers: about 1.7x faster than 2
  // (1 runner), measured on opera/grpo.ts.
  concurrency: 4,
  timeoutMS: 10000,
  // The sandbox copy needs only the code under test, its tests and the configs.
  ignorePatterns: [
    '/*',
    '!/engine',
    '!/opera',
    '!/test',
    '/test/*',
    '!/test/opera',
    '!/test/engine',
    '!/test/config',
    '!/test/util',
    '!/config',
    '!/util',
    '!/package.json',
    '!/tsconfig.json',
    '!/tsconfig.mutate.json',
    '!/jest.config.js',
    '!/jest.mutate.config.js',
  ],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 90, low: 80, break: null },
};
