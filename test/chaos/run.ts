/**
 * `npm run chaos [-- --kills 20 --seed 1 --heartbeat-timeout 10]`: fault injection against a real run.
 *
 * On services of its own (a PostgreSQL cluster, a Temporal dev server and a state directory under
 * /var/tmp, other ports: nothing the user's services hold is touched), it runs the chaos config once
 * undisturbed with two workers, then again while it
 *   - SIGKILLs a worker N times at random moments (seeded), choosing among the workers running a stage
 *     when any is, and starts a new one each time,
 *   - SIGKILLs the Temporal server once (it restarts from its database file),
 *   - stops PostgreSQL the way a crash does (immediate shutdown) once during an iteration and once right
 *     after a `reward` stage completed, bringing it back 5 s later,
 * and asserts, with no operator action: the run completes; its final checkpoint sha256 and the digests
 * of all samples, metrics and checkpoint files equal the undisturbed run's; no attempt is left running
 * and `operaflow verify` finds nothing missing (no duplicate rows: unique keys, checked too); and the
 * wall time is at most 3× the undisturbed run's. Exit 0 when all hold. Not part of `npm test` (minutes).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { verifyRun } from '../../activities/verify';
import { createDb } from '../../db/client';
import { portIsFree } from '../../services/process';
import { startLocalPostgres, stopLocalPostgres } from '../../services/postgres';
import { ownedTemporalPid, startLocalTemporal } from '../../services/temporal';
import { ensureServices, stopServices } from '../../services';
import { mulberry32 } from '../../util/random';
import { expectSameRecord, runDigest, runRecord } from '../integration/records';
import { runCli, smokeYaml, startWorker, type WorkerProcess } from '../integration/helpers';

const { values: args } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
    seed: { type: 'string', default: '1' },
    'heartbeat-timeout': { type: 'string', default: '10' },
    'max-ratio': { type: 'string', default: '3' },
    keep: { type: 'boolean', default: false },
  },
  strict: true,
});
const KILLS = Number(args.kills);
const MAX_RATIO = Number(args['max-ratio']);
const random = mulberry32(Number(args.seed));
const log = (line: string) => process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The first free port from `from` (the user's own services keep theirs). */
async function freePort(from: number): Promise<number> {
  for (let port = from; port < from + 200; port++) if (await portIsFree(port)) return port;
  throw new Error(`no free port in ${from}..${from + 199}`);
}

/** Own services: a state directory PostgreSQL's user can reach, other ports, no DATABASE_URL/TEMPORAL_ADDRESS. */
async function isolate(): Promise<string> {
  const base = mkdtempSync('/var/tmp/operaflow-chaos-');
  chmodSync(base, 0o755);
  delete process.env.DATABASE_URL;
  delete process.env.TEMPORAL_ADDRESS;
  Object.assign(process.env, {
    OPERAFLOW_STATE_DIR: join(base, 'state'),
    OPERAFLOW_PG_DIR: join(base, 'pg'),
    OPERAFLOW_PG_PORT: String(await freePort(5533)),
    OPERAFLOW_TEMPORAL_PORT: String(await freePort(7433)),
    OPERAFLOW_QUEUE_PREFIX: 'chaos-',
    OPERAFLOW_HEARTBEAT_TIMEOUT: args['heartbeat-timeout'],
    FORCE_COLOR: '0',
  });
  const { databaseUrl, temporalAddress } = await ensureServices({ log });
  // Children (CLI, workers) use these as external services: they never start or stop anything.
  Object.assign(process.env, { DATABASE_URL: databaseUrl, TEMPORAL_ADDRESS: temporalAddress });
  return base;
}

/** Sixteen iterations (about a minute undisturbed on two cores), two shards, continue-as-new, a long enough SFT to be killed in, and no stage retries to spare. */
function chaosConfig(dir: string): string {
  const file = join(dir, 'chaos.yaml');
  writeFileSync(
    file,
    smokeYaml({
      name: 'chaos',
      artifacts: join(dir, 'artifacts'),
      grpo: '{ iterations: 16, promptsPerIteration: 8, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 64 }',
      runtime: `{ rolloutShards: 2, continueAsNewEvery: 2, maxStageAttempts: 1, artifacts: ${JSON.stringify(join(dir, 'artifacts'))} }`,
    }).replace('steps: 20,', 'steps: 200,'),
  );
  return file;
}

async function runStatus(db: pg.Pool, runId: string): Promise<string | undefined> {
  try {
    const { rows } = await db.query<{ status: string; error: string | null }>(
      'select status, error from runs where id = $1',
      [runId],
    );
    if (rows[0] && ['blocked', 'failed', 'cancelled'].includes(rows[0].status))
      throw new Error(`the run ended ${rows[0].status}: ${rows[0].error}`);
    return rows[0]?.status;
  } catch (err) {
    if ((err as Error).message.startsWith('the run ended')) throw err;
    return undefined; // the database is down on purpose
  }
}

/** The stages the worker with this pid is running (from stage_attempts), e.g. `update 3`. */
async function stagesHeldBy(db: pg.Pool, runId: string, pid: number): Promise<string[]> {
  try {
    const { rows } = await db.query<{ stage: string; iteration: number; shard: number }>(
      "select stage, iteration, shard from stage_attempts where run_id = $1 and status = 'running' and worker like $2",
      [runId, `%:${pid}`],
    );
    return rows.map((r) => `${r.stage} ${r.iteration}${r.shard ? `/${r.shard}` : ''}`);
  } catch {
    return [];
  }
}

async function completedRewards(db: pg.Pool, runId: string): Promise<number> {
  try {
    const { rows } = await db.query<{ n: number }>(
      "select count(*)::int as n from stage_attempts where run_id = $1 and stage = 'reward' and status = 'completed'",
      [runId],
    );
    return rows[0]!.n;
  } catch {
    return -1;
  }
}

async function main(): Promise<number> {
  const base = await isolate();
  const env = process.env;
  const db = new pg.Pool({ connectionString: env.DATABASE_URL, max: 2 });
  db.on('error', () => {}); // idle clients die with the server on purpose
  const workers: WorkerProcess[] = [];
  const cleanup = [base];
  try {
    // Config and artifacts in the temp directory, one of a worker's default roots (activities/confine.ts).
    const work = mkdtempSync(join(tmpdir(), 'operaflow-chaos-'));
    cleanup.push(work);
    const config = chaosConfig(work);
    workers.push(await startWorker(env), await startWorker(env));

    log('undisturbed run (two workers)');
    let t0 = Date.now();
    const reference = await runCli(['train', config, '--id', 'chaos-reference', '--wait', '--json'], env, 1_200_000);
    if (reference.code !== 0) throw new Error(`the undisturbed run failed:\n${reference.stderr}`);
    const undisturbedS = (Date.now() - t0) / 1000;
    log(`undisturbed: ${undisturbedS.toFixed(1)} s`);

    const runId = 'chaos-run';
    t0 = Date.now();
    const launched = await runCli(['train', config, '--id', runId, '--json'], env);
    if (launched.code !== 0) throw new Error(`train failed:\n${launched.stderr}`);
    // Kill moments: uniform over the undisturbed duration (seeded), so kills land in every stage.
    const killAt = Array.from({ length: KILLS }, () => random() * undisturbedS * 1000).sort((a, b) => a - b);
    const temporalKillAt = undisturbedS * 1000 * 0.35;
    const pgCrashAt = undisturbedS * 1000 * 0.6;
    let kills = 0;
    let killsInStage = 0;
    let temporalKilled = false;
    let pgCrashes = 0;
    let rewardsSeen = await completedRewards(db, runId);
    let afterRewardCrashed = false;
    for (;;) {
      const elapsed = Date.now() - t0;
      const status = await runStatus(db, runId);
      if (status === 'completed') break;
      if (elapsed > 20 * undisturbedS * 1000)
        throw new Error('the run did not complete within 20× its undisturbed time');
      if (kills < KILLS && elapsed >= killAt[kills]!) {
        // The victim: a worker running a stage when there is one (a kill of an idle worker costs nothing).
        const held = await Promise.all(workers.map((w) => stagesHeldBy(db, runId, w.child.pid!)));
        const busy = workers.map((_, i) => i).filter((i) => held[i]!.length > 0);
        const pool = busy.length ? busy : workers.map((_, i) => i);
        const k = pool[Math.floor(random() * pool.length)]!;
        const holding = held[k]!;
        await workers[k]!.kill();
        kills += 1;
        if (holding.length) killsInStage += 1;
        log(
          `kill ${kills}/${KILLS}: worker ${k} SIGKILLed at ${(elapsed / 1000).toFixed(1)} s${holding.length ? ` in ${holding.join(', ')}` : ' (idle)'}`,
        );
        workers[k] = await startWorker(env);
      }
      if (!temporalKilled && elapsed >= temporalKillAt) {
        const pid = ownedTemporalPid();
        if (pid) process.kill(pid, 'SIGKILL');
        temporalKilled = true;
        log(`Temporal SIGKILLed (pid ${pid}) at ${(elapsed / 1000).toFixed(1)} s`);
        await sleep(2000);
        await startLocalTemporal(log);
      }
      if (pgCrashes === 0 && elapsed >= pgCrashAt) {
        await crashPostgres(`during iteration ${await iterationOf(db, runId)}`);
        pgCrashes += 1;
      }
      const rewards = await completedRewards(db, runId);
      if (!afterRewardCrashed && rewards > rewardsSeen && rewardsSeen >= 1) {
        await crashPostgres(`right after reward stage ${rewards} completed`);
        afterRewardCrashed = true;
        pgCrashes += 1;
      }
      if (rewards >= 0) rewardsSeen = rewards;
      await sleep(100);
    }
    const chaosS = (Date.now() - t0) / 1000;
    log(
      `completed after ${kills} worker kills, a Temporal kill and ${pgCrashes} PostgreSQL crashes: ${chaosS.toFixed(1)} s`,
    );

    // Same results, nothing missing, nothing doubled.
    const got = await runRecord(db, runId);
    const want = await runRecord(db, 'chaos-reference');
    expectSameRecord('chaos run vs undisturbed run', got, want);
    const handle = createDb(env.DATABASE_URL);
    const verified = await verifyRun(handle.db, runId).finally(() => handle.close());
    const { rows: attempts } = await db.query<{ status: string; n: number }>(
      'select status, count(*)::int as n from stage_attempts where run_id = $1 group by status order by status',
      [runId],
    );
    const { rows: operator } = await db.query(
      "select 1 from events where run_id = $1 and type in ('retried', 'blocked')",
      [runId],
    );
    const ratio = chaosS / undisturbedS;
    const digest = runDigest(got);
    const summary = {
      kills,
      killsInStage,
      temporalKills: temporalKilled ? 1 : 0,
      postgresCrashes: pgCrashes,
      heartbeatTimeoutS: Number(env.OPERAFLOW_HEARTBEAT_TIMEOUT),
      undisturbedS: Number(undisturbedS.toFixed(1)),
      chaosS: Number(chaosS.toFixed(1)),
      ratio: Number(ratio.toFixed(2)),
      finalCheckpoint: digest.finalCheckpoint,
      digestsEqual: true,
      rows: digest.counts,
      attempts: Object.fromEntries(attempts.map((a) => [a.status, a.n])),
      operatorActions: operator.length,
      verifyProblems: verified.problems.map((p) => `${p.where}: ${p.problem}`),
    };
    console.log(JSON.stringify(summary));
    const failures = [
      ...(verified.problems.length ? ['operaflow verify found problems'] : []),
      ...(summary.attempts.running ? ['attempts left running'] : []),
      ...(operator.length ? ['the run needed an operator'] : []),
      ...(ratio > MAX_RATIO ? [`wall time ${ratio.toFixed(2)}× the undisturbed run's (at most ${MAX_RATIO}×)`] : []),
    ];
    for (const f of failures) log(`FAIL: ${f}`);
    if (!failures.length) log(`ok: ${kills} kills survived, ${ratio.toFixed(2)}× wall time, digests equal`);
    return failures.length ? 1 : 0;
  } finally {
    for (const w of workers) await w.stop().catch(() => {});
    await db.end().catch(() => {});
    if (!args.keep) {
      delete process.env.DATABASE_URL;
      delete process.env.TEMPORAL_ADDRESS;
      await stopServices({ log }).catch((err: Error) => log(`stopping services: ${err.message}`));
      for (const dir of cleanup) rmSync(dir, { recursive: true, force: true });
    } else log(`kept services and files under ${base}`);
  }

  async function crashPostgres(when: string): Promise<void> {
    await stopLocalPostgres(log, 'immediate');
    log(`PostgreSQL crashed (immediate stop) ${when}`);
    await sleep(5000);
    await startLocalPostgres(log);
  }
}

async function iterationOf(db: pg.Pool, runId: string): Promise<string> {
  try {
    const { rows } = await db.query<{ i: number }>('select current_iteration as i from runs where id = $1', [runId]);
    return String((rows[0]?.i ?? 0) + 1);
  } catch {
    return '?';
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    log(`FAIL: ${err.message}`);
    process.exit(1);
  },
);
