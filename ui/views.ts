/**
 * What the dashboard shows, shaped from database rows: pure functions (no I/O), so each view is tested
 * on hand-made rows and the server (ui/api.ts) only fetches and passes rows in.
 */
import { differingKeys, flattenConfig } from '../config/diff';
import type { Artifact, Event, Run, Sample, StageAttempt } from '../db/schema';
import { DEFAULT_OPERA_REWARD_OPTIONS, keywordMatcher, reflectionMarks, reflectionSegments } from '../opera/reward';

const iterationsOf = (config: Record<string, unknown>) =>
  (config as { grpo?: { iterations?: number } }).grpo?.iterations ?? null;
const evalReward = (summary: Record<string, unknown> | null, key: 'evalBefore' | 'evalAfter') =>
  (summary?.[key] as { reward?: number | null } | null | undefined)?.reward ?? null;

/** One line of the runs page. */
export function runRow(r: Run, now = new Date()) {
  const end = r.finishedAt ?? (r.startedAt ? now : null);
  return {
    id: r.id,
    name: r.name,
    group: r.group,
    status: r.status,
    currentIteration: r.currentIteration,
    iterations: iterationsOf(r.config),
    configHash: r.configHash,
    codeVersion: r.codeVersion,
    seed: r.seed,
    createdAt: r.createdAt,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    durationMs: r.startedAt && end ? end.getTime() - r.startedAt.getTime() : null,
    evalBefore: evalReward(r.summary, 'evalBefore'),
    evalAfter: evalReward(r.summary, 'evalAfter'),
  };
}

/** What produced the run's numbers: config, code, data and every weights file, each with its sha256. */
export function auditTrail(run: Run, files: Artifact[]) {
  const file = (a: Artifact) => ({
    iteration: a.iteration,
    name: a.name,
    uri: a.uri,
    sha256: a.sha256,
    bytes: a.bytes,
  });
  const dataset = files.find((a) => a.kind === 'dataset');
  return {
    configHash: run.configHash,
    codeVersion: run.codeVersion,
    seed: run.seed,
    dataset: dataset ? file(dataset) : null,
    checkpoints: files.filter((a) => a.kind === 'checkpoint' || a.kind === 'optimizer').map(file),
  };
}

/**
 * Every stage attempt as a bar from start to end (a running one ends now), and the periods the run was
 * blocked: from each `blocked` event to the `retried` event of the same stage (or a cancel, or now).
 */
export function timelineOf(attempts: StageAttempt[], events: Event[], now = new Date()) {
  const bars = attempts.map((a) => ({
    stage: a.stage,
    iteration: a.iteration,
    shard: a.shard,
    attempt: a.attempt,
    status: a.status,
    worker: a.worker,
    providers: a.providers,
    startedAt: a.startedAt,
    finishedAt: a.finishedAt,
    endedAt: a.finishedAt ?? now,
    durationMs: a.durationMs,
    error: a.error,
  }));
  const stageOf = (e: Event) => {
    const d = e.detail as { stage?: string; iteration?: number; shard?: number } | null;
    return `${d?.stage}/${d?.iteration}/${d?.shard}`;
  };
  const blocked: { stage: string; from: Date; to: Date; error: string | null; resolvedBy: string | null }[] = [];
  const open = new Map<string, (typeof blocked)[number]>();
  for (const e of events) {
    if (e.type === 'blocked') {
      const d = e.detail as { error?: string } | null;
      const period = { stage: stageOf(e), from: e.at, to: now, error: d?.error ?? null, resolvedBy: null };
      open.set(period.stage, period);
      blocked.push(period);
    } else if (e.type === 'retried' && open.has(stageOf(e))) {
      Object.assign(open.get(stageOf(e))!, { to: e.at, resolvedBy: `retried by ${e.actor}` });
      open.delete(stageOf(e));
    } else if (e.type === 'cancelled') {
      for (const period of open.values()) Object.assign(period, { to: e.at, resolvedBy: `cancelled by ${e.actor}` });
      open.clear();
    }
  }
  return { attempts: bars, blocked };
}

/** The reward settings a sample was scored with: the run's `reward` config over the defaults it left out. */
function rewardOptions(config: Record<string, unknown>) {
  return { ...DEFAULT_OPERA_REWARD_OPTIONS, ...((config.reward as object | undefined) ?? {}) };
}

/** Every raw value a batch's EMA is computed from (opera/reward.ts `operaRewards`, step 1). */
export function batchValues(rows: Pick<Sample, 'logpFull' | 'logpInitial' | 'logpSegments'>[]): number[] {
  return rows.flatMap((r) => [r.logpFull ?? NaN, r.logpInitial ?? NaN, ...(r.logpSegments ?? [])]);
}

/**
 * One scored response, for the samples page: its reasoning segments, each with the reference log-prob
 * at its OPERA checkpoint and whether it counted as a reflection. `ema` is the baseline the batch was
 * smoothed with (train: the iteration's `reward/ema`; eval: the batch mean, as evaluation starts from none).
 * `marksAgree` says the marks add up to the recorded count, so the page never shows marks the reward did
 * not give.
 */
export function sampleDetail(sample: Sample, config: Record<string, unknown>, ema: number | null) {
  const opts = rewardOptions(config);
  const segments = reflectionSegments(sample.response);
  const logps = sample.logpSegments ?? [];
  const smooth = (v: number) => (ema === null ? v : (1 - opts.emaMix) * v + opts.emaMix * ema);
  const marks =
    sample.logpInitial === null || logps.length !== segments.length
      ? segments.map(() => false)
      : reflectionMarks(
          segments,
          smooth(sample.logpInitial),
          logps.map(smooth),
          keywordMatcher(opts.keywords, opts.keywordMatch),
        );
  // A wrong math answer scores no reflections, whatever its segments.
  const scored = sample.taskType !== 'math' || sample.correct === true;
  const counted = marks.filter(Boolean).length;
  return {
    ...sample,
    segments: segments.map((text, j) => ({ text, logp: logps[j] ?? null, counted: scored && marks[j]! })),
    checkpoints: [
      { label: '<think>', logp: sample.logpInitial },
      ...segments.map((_, j) => ({ label: `segment ${j + 1}`, logp: logps[j] ?? null })),
    ],
    ema,
    marksAgree: scored ? counted === sample.reflectionCount : sample.reflectionCount === 0,
  };
}

/** The config keys whose values are not the same in every config, with each config's value (in order). */
export function configDiff(configs: Record<string, unknown>[]): { key: string; values: unknown[] }[] {
  const flat = configs.map((c) => flattenConfig(c));
  return differingKeys(flat).map((key) => ({ key, values: flat.map((f) => f.get(key)) }));
}
