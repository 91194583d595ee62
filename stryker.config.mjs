// Mutation testing of the algorithm (opera/) and the gradient rules (engine/autodiff.ts): `npm run mutate`.
// Slow (minutes), so not part of `npm test` or CI. Runs the unit tests of test/opera and test/engine
// through their own jest config (no globalSetup: no PostgreSQL or Temporal needed). Reports go to
// reports/mutation/ (git-ignored).
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  mutate: ['opera/**/*.ts', 'engine/autodiff.ts'],
  testRunner: 'jest',
  jest: { projectType: 'custom', configFile: 'jest.mutate.config.js', enableFindRelatedTests: true },
  // Mutants that do not type-check are discarded before any test runs (cheaper than running them).
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.mutate.json',
  coverageAnalysis: 'perTest',
  // 2 cores: one jest process per core; the ORT sessions in the engine tests are small.
  concurrency: 2,
  timeoutMS: 10000,
  // The sandbox copy needs only the code under test, its tests and the configs.
  ignorePatterns: ['/*', '!/engine', '!/opera', '!/test', '/test/*', '!/test/opera', '!/test/engine', '!/package.json', '!/tsconfig.json', '!/tsconfig.mutate.json', '!/jest.config.js', '!/jest.mutate.config.js'],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 90, low: 80, break: null },
};
