// Lint: only rules that catch real bugs (DESIGN.md "Conventions"): promises nobody awaits or handles,
// and workflow code that is not deterministic (Node builtins, the engine, the database). Type-aware,
// through tsconfig.json.
import { builtinModules } from 'node:module';
import tseslint from 'typescript-eslint';

const nodeBuiltins = builtinModules.filter((m) => !m.startsWith('_'));

export default tseslint.config(
  { ignores: ['node_modules/', '.operaflow/', 'db/migrations/', 'coverage/', 'out/', 'reports/', '.stryker-tmp/'] },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.base],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
    },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox and is bundled on its own: every effect is
    // an activity, which workflows reach only through `proxyActivities` on the activity *types*.
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({
            name,
            message: 'Node builtins are not deterministic: do this in an activity.',
          })),
          patterns: [
            { group: ['node:*'], message: 'Node builtins are not deterministic: do this in an activity.' },
            {
              group: [
                '**/engine',
                '**/engine/**',
                '**/db',
                '**/db/**',
                'onnxruntime-node',
                'onnxruntime-node/**',
                'pg',
                'pg/**',
                'drizzle-orm',
                'drizzle-orm/**',
              ],
              message: 'Workflows must not touch the engine or the database: call an activity.',
            },
            {
              group: [
                '**/activities',
                '**/activities/**',
                '@temporalio/activity',
                '@temporalio/client',
                '@temporalio/worker',
              ],
              allowTypeImports: true,
              message: 'Workflows may import activity types only (`import type`), and call them via proxyActivities.',
            },
          ],
        },
      ],
    },
  },
);
