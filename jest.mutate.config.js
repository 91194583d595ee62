/**
 * Jest config for mutation testing (`npm run mutate`, stryker.config.mjs): only the unit tests of
 * opera/ and engine/, with no globalSetup, so no PostgreSQL or Temporal is started. Same swc transform
 * as jest.config.js. Also handy for a quick local run: `npx jest -c jest.mutate.config.js`.
 */
const base = require('./jest.config.js');

module.exports = {
  testEnvironment: base.testEnvironment,
  transform: base.transform,
  testTimeout: base.testTimeout,
  roots: ['<rootDir>/test/opera', '<rootDir>/test/engine', '<rootDir>/test/config', '<rootDir>/test/util'],
  testMatch: ['**/*.test.ts'],
};
