/**
 * `operaflow verify <run> [--repair]`: does the database hold everything the run's completed stages
 * produced, and does every recorded file still match its sha256? A completed stage attempt is the
 * promise; this checks it is kept: the artifact rows its output names, the metrics it recorded, the
 * samples its artifact holds, no attempt left `running` in a finished run. `--repair` re-derives what
 * the artifacts can give back (artifact rows of hash-verified files, metrics from the stage's recorded
 * output, sample rows from the reward and eval artifacts, which keep them as computed); a changed or
 * missing file cannot be re-derived and stays a problem.
 */
import { join } from 'node:path';
import { runConfigSchema } from '../config/schema';
import type { Db } from '../db/client';
import {
  finishStageAttempt,
  listArtifacts,
  listStageAttempts,
  metricSeries,
  recordArtifact,
  requireRun,
  sampleKeys,
  TERMINAL_STATUSES,
  upsertMetrics,
  upsertSamples,
} from '../db/queries';
import type { NewSample, StageAttempt } from '../db/schema';
import { CHECKPOINT_FILES } from '../engine/checkpoint';
import { canonicalJson } from '../util/canonical';
import { evalMetrics, type EvalFile } from './evaluate';
import type { RewardFile } from './reward';
import { pad, runDirOf, storeOf } from './runtime';
import { getJson, hashArtifact } from './store';
import type { ArtifactRef, CheckpointRef, DatasetRef, EvalResult, SftOutput, UpdateOutput } from './types';

export interface Problem {
  /** The stage (`update iteration 3`) or artifact the problem is about. */
  where: string;
  problem: string;
  /** Whether `--repair` can re-derive what is missing. */
  repairable: boolean;
  repaired: boolean;
}

export interface VerifyReport {
  runId: string;
  status: string;
  checked: { stages: number; artifacts: number; metrics: number; samples: number };
  problems: Problem[];
}

/** An artifact a completed stage must have recorded; `ref` is what its output says, when it says it. */
interface ExpectedArtifact {
  kind: string;
  iteration: number;
  name: string;
  ref?: ArtifactRef;
  /** Where the file is when the output names none (evaluation results). */
  path?: string;
  /** For a file found without a row: is it the one the stage produced? */
  matchesOutput?: (bytes: unknown) => boolean;
}

const artifactKey = (a: { kind: string; iteration: number; name: string }) => `${a.kind}/${a.iteration}/${a.name}`;

function checkpointArtifacts(ckpt: CheckpointRef): ExpectedArtifact[] {
  return Object.entries(ckpt.files).map(([name, sha256]) => ({
    kind: name === CHECKPOINT_FILES.optimizer ? 'optimizer' : 'checkpoint',
    iteration: ckpt.iteration,
    name,
    ref: { uri: `${ckpt.uri}/${name}`, sha256, bytes: -1 },
  }));
}

/** The latest completed attempt of each (stage, iteration, shard), and every other finding about attempts. */
function completedStages(attempts: StageAttempt[], problems: Problem[]) {
  const completed = new Map<string, StageAttempt>();
  for (const a of attempts) {
    const key = `${a.stage} iteration ${a.iteration}${a.shard ? ` shard ${a.shard}` : ''}`;
    if (a.status !== 'completed') continue;
    const first = completed.get(key);
    if (first && canonicalJson(first.output) !== canonicalJson(a.output))
      problems.push({
        where: key,
        problem: `attempts ${first.attempt} and ${a.attempt} both completed with different outputs`,
        repairable: false,
        repaired: false,
      });
    if (!first) completed.set(key, a);
  }
  return completed;
}

export async function verifyRun(db: Db, runId: string, options: { repair?: boolean } = {}): Promise<VerifyReport> {
  const run = await requireRun(db, runId);
  const config = runConfigSchema.parse(run.config);
  const problems: Problem[] = [];
  /** Records a problem; with --repair, re-derives what it can at once (later checks see the repaired rows). */
  const found = async (where: string, problem: string, repair?: () => Promise<void>) => {
    problems.push({ where, problem, repairable: repair !== undefined, repaired: false });
    if (repair && options.repair) {
      await repair();
      problems.at(-1)!.repaired = true;
    }
  };

  const attempts = await listStageAttempts(db, runId);
  if ((TERMINAL_STATUSES as readonly string[]).includes(run.status)) {
    for (const a of attempts.filter((x) => x.status === 'running'))
      await found(
        `${a.stage} iteration ${a.iteration} shard ${a.shard}`,
        `attempt ${a.attempt} is still 'running' in a ${run.status} run`,
        () =>
          finishStageAttempt(db, a.id, {
            status: 'lost',
            error: 'interrupted (marked lost by operaflow verify --repair)',
          }),
      );
  }
  const completed = completedStages(attempts, problems);

  const artifactRows = new Map((await listArtifacts(db, runId)).map((a) => [artifactKey(a), a]));
  const metricValues = new Map((await metricSeries(db, runId)).map((m) => [`${m.step} ${m.name}`, m.value]));
  const samplesHeld = new Set(
    (await sampleKeys(db, runId)).map((s) => `${s.split} ${s.iteration} ${s.promptId} ${s.sampleIndex}`),
  );
  const sampleKey = (s: NewSample) => `${s.split} ${s.iteration} ${s.promptId} ${s.sampleIndex}`;

  /** The metrics a stage recorded at `step`, as its output states them (so they can be restored from it). */
  const expectMetrics = async (where: string, step: number, values: Record<string, unknown>) => {
    const missing: Record<string, number> = {};
    for (const [name, value] of Object.entries(values)) {
      if (typeof value !== 'number' || !Number.isFinite(value)) continue; // non-finite values are never recorded
      if (metricValues.get(`${step} ${name}`) !== value) missing[name] = value;
    }
    const names = Object.keys(missing);
    if (names.length)
      await found(
        where,
        `metric${names.length > 1 ? 's' : ''} ${names.join(', ')} at step ${step} missing or different from the stage's output`,
        () => upsertMetrics(db, runId, step, missing),
      );
  };

  /** The samples a stage's artifact holds must all be rows, and the rows of that split and iteration no more. */
  const expectSamples = async (where: string, split: string, iteration: number, rows: NewSample[]) => {
    const missing = rows.filter((r) => !samplesHeld.has(sampleKey(r)));
    const expected = new Set(rows.map(sampleKey));
    const extra = [...samplesHeld].filter((k) => k.startsWith(`${split} ${iteration} `) && !expected.has(k));
    if (missing.length)
      await found(where, `${missing.length} of ${rows.length} ${split} samples missing`, () =>
        upsertSamples(
          db,
          missing.map((r) => ({ ...r, runId })),
        ),
      );
    if (extra.length) await found(where, `${extra.length} ${split} samples that its artifact does not hold`);
  };

  const expected: { where: string; artifact: ExpectedArtifact }[] = [];
  const sampleChecks: (() => Promise<void>)[] = [];
  for (const [where, attempt] of completed) {
    const { stage, iteration, shard } = attempt;
    const output = attempt.output as Record<string, unknown>;
    const expect = (artifact: ExpectedArtifact) => expected.push({ where, artifact });
    switch (stage) {
      case 'prepareDataset': {
        const out = output as unknown as DatasetRef;
        expect({ kind: 'dataset', iteration: 0, name: 'dataset.json', ref: out.artifact });
        await expectMetrics(where, 0, { 'data/train_rows': out.train, 'data/eval_rows': out.eval });
        break;
      }
      case 'rollout':
      case 'score':
        expect({
          kind: stage === 'rollout' ? 'rollouts' : 'scores',
          iteration,
          name: `shard-${shard}.json`,
          ref: (output as { artifact: ArtifactRef }).artifact,
        });
        break;
      case 'reward': {
        const ref = (output as { artifact: ArtifactRef }).artifact;
        expect({ kind: 'rewards', iteration, name: 'batch.json', ref });
        await expectMetrics(where, iteration, (output as { metrics: Record<string, number> }).metrics);
        sampleChecks.push(async () => {
          const file = await getJson<RewardFile>(ref);
          if (file.samples) await expectSamples(where, 'train', iteration, file.samples); // absent in files from before verify
        });
        break;
      }
      case 'coldStartSft': {
        const out = output as unknown as SftOutput;
        checkpointArtifacts(out.checkpoint).forEach(expect);
        if (out.steps > 0 && out.finalLoss !== null)
          await expectMetrics(where, out.steps - 1, { 'sft/loss': out.finalLoss });
        break;
      }
      case 'update': {
        const out = output as unknown as UpdateOutput;
        checkpointArtifacts(out.checkpoint).forEach(expect);
        await expectMetrics(where, iteration, out.metrics);
        break;
      }
      case 'evaluate': {
        const result = output as unknown as EvalResult;
        const path = join(runDirOf(config, runId), 'eval', `iter-${pad(iteration)}.json`);
        expect({
          kind: 'eval',
          iteration,
          name: 'eval.json',
          path,
          matchesOutput: (file) => canonicalJson((file as EvalFile).result) === canonicalJson(result),
        });
        await expectMetrics(where, iteration, evalMetrics(result));
        sampleChecks.push(async () => {
          const row = artifactRows.get(artifactKey({ kind: 'eval', iteration, name: 'eval.json' }));
          if (!row) return; // reported with the artifacts
          const file = await getJson<EvalFile>(row);
          if (file.samples) await expectSamples(where, 'eval', iteration, file.samples);
        });
        break;
      }
    }
  }

  // Artifact rows the stages' outputs name.
  for (const { where, artifact } of expected) {
    const key = artifactKey(artifact);
    const row = artifactRows.get(key);
    if (row) {
      if (artifact.ref && row.sha256 !== artifact.ref.sha256)
        await found(
          where,
          `artifact ${key}: its row says sha256 ${row.sha256}, the stage's output ${artifact.ref.sha256}`,
        );
      continue;
    }
    const uri = artifact.ref?.uri ?? storeOf(config).uriOf(artifact.path!);
    const onDisk = await hashArtifact(uri).catch(() => undefined);
    const sameFile = artifact.ref
      ? onDisk?.sha256 === artifact.ref.sha256
      : onDisk !== undefined && artifact.matchesOutput!(await getJson({ uri, ...onDisk }).catch(() => undefined));
    await found(
      where,
      `artifact ${key} has no row${sameFile ? '' : ' and its file is missing or not the one the stage produced'}`,
      sameFile && onDisk
        ? async () => {
            const restored = await recordArtifact(db, { runId, ...artifact, uri, ...onDisk });
            artifactRows.set(key, restored);
          }
        : undefined,
    );
  }

  // Every recorded file, against its sha256.
  for (const row of artifactRows.values()) {
    const onDisk = await hashArtifact(row.uri).catch(
      (err: NodeJS.ErrnoException) => err.code ?? err.message ?? 'unreadable',
    );
    if (typeof onDisk === 'string')
      await found(`artifact ${artifactKey(row)}`, `file ${row.uri} is missing (${onDisk})`);
    else if (onDisk.sha256 !== row.sha256)
      await found(
        `artifact ${artifactKey(row)}`,
        `file ${row.uri} has sha256 ${onDisk.sha256}, recorded ${row.sha256}`,
      );
  }

  // Samples, from artifacts whose files are intact.
  for (const check of sampleChecks) await check().catch(() => undefined); // a bad file is reported above

  return {
    runId,
    status: run.status,
    checked: {
      stages: completed.size,
      artifacts: artifactRows.size,
      metrics: metricValues.size,
      samples: samplesHeld.size,
    },
    problems,
  };
}
