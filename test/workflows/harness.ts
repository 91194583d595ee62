/**
 * For workflow logic tests with stand-in activities: the real Temporal dev server that the test setup
 * runs, the workflow bundle, and a worker on a fresh task queue for the length of one test.
 */
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker, bundleWorkflowCode, type WorkflowBundle } from '@temporalio/worker';
import type { createActivities } from '../../activities';

export type Activities = ReturnType<typeof createActivities>;

/** Registers beforeAll/afterAll; `client()` and `withWorker()` are ready inside tests. */
export function workflowHarness() {
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundle;
  beforeAll(async () => {
    try {
      Runtime.install({ logger: new DefaultLogger('WARN') });
    } catch {
      // installed by another test file in this process
    }
    env = await TestWorkflowEnvironment.createFromExistingServer({ address: process.env.TEMPORAL_ADDRESS });
    bundle = await bundleWorkflowCode({
      workflowsPath: join(resolve(__dirname, '..', '..'), 'workflows', 'index.ts'),
      logger: new DefaultLogger('WARN'),
    });
  });
  afterAll(async () => {
    await env?.teardown();
  });
  return {
    client: () => env.client,
    /** Runs `fn` while a worker with `activities` polls a task queue of its own (passed to `fn`). */
    async withWorker<T>(activities: Partial<Activities>, fn: (queue: string) => Promise<T>): Promise<T> {
      const queue = `logic-${randomUUID()}`;
      const worker = await Worker.create({
        connection: env.nativeConnection,
        taskQueue: queue,
        workflowBundle: bundle,
        activities,
      });
      return worker.runUntil(fn(queue));
    },
  };
}
