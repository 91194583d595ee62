/**
 * A test-only workflow that runs one activity of `trainingRun` once, with the input the test gives, so
 * a test can drive a single stage directly (through a real worker and a real Temporal server) and look
 * at what it did: rows written, attempts recorded, engine calls made.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { createActivities } from '../../activities';

type Activities = ReturnType<typeof createActivities>;

export async function callActivity(name: keyof Activities, input: unknown): Promise<unknown> {
  const activities = proxyActivities<Activities>({ startToCloseTimeout: '5 minutes', retry: { maximumAttempts: 1 } });
  return (activities[name] as (input: unknown) => Promise<unknown>)(input);
}
