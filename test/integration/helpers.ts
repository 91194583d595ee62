/**
 * Integration-test helpers: the real CLI and real worker processes (`node --import tsx
 * scripts/operaflow.ts …`) against the services jest's globalSetup brought up (DATABASE_URL,
 * TEMPORAL_ADDRESS). Each test file uses its own task-queue prefix, so concurrent test runs sharing
 * one Temporal server never hand work to each other's workers (which use other databases).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';

export const ROOT = resolve(__dirname, '..', '..');
/** How tests run the `operaflow` CLI: node with tsx's loader (no build step). */
export const CLI = ['--import', 'tsx', join(ROOT, 'scripts', 'operaflow.ts')];

export function testEnv(prefix: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, OPERAFLOW_QUEUE_PREFIX: prefix, FORCE_COLOR: '0', ...extra };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 180_000): Promise<CliResult> {
  const child = spawn(process.execPath, [...CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  return collectOutput(child, `operaflow ${args.join(' ')}`, timeoutMs);
}

/** The exit code and output of a spawned `child` (stdout and stderr piped); SIGKILLed after `timeoutMs`. */
export function collectOutput(child: ChildProcess, label: string, timeoutMs: number): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${label} timed out after ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

export interface WorkerProcess {
  child: ChildProcess;
  output: () => string;
  /** SIGKILL: the process gets no chance to finish or report anything. */
  kill(): Promise<void>;
  /** SIGTERM and wait (graceful shutdown). */
  stop(): Promise<void>;
}

/** Starts `operaflow worker` and resolves once it polls its queues. */
export function startWorker(env: NodeJS.ProcessEnv, timeoutMs = 90_000): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [...CLI, 'worker'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  return workerReady(child, 'worker', timeoutMs);
}

/**
 * Resolves once a spawned `operaflow worker` (`child`, stdout and stderr piped) says it polls its queues;
 * rejects, with its output, when it exits first or takes longer than `timeoutMs`.
 */
export async function workerReady(child: ChildProcess, label: string, timeoutMs: number): Promise<WorkerProcess> {
  let out = '';
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolveReady, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${label} did not start within ${timeoutMs} ms:\n${out}`)),
      timeoutMs,
    );
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(' polling ')) {
        clearTimeout(timer);
        resolveReady();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited with ${code} before polling:\n${out}`));
    });
  });
  return {
    child,
    output: () => out,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** A copy of a config with overrides appended as YAML (later keys of a document win only if unique, so whole sections are replaced). */
export function writeConfig(yaml: string): string {
  const file = join(tmpDir(), 'config.yaml');
  writeFileSync(file, yaml);
  return file;
}

const tmpDirs: string[] = [];

/** A fresh temporary directory, removed by `removeTmpDirs()` (call it in afterAll). */
export function tmpDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'operaflow-test-'));
  tmpDirs.push(dir);
  return dir;
}

export function removeTmpDirs(): void {
  for (const dir of tmpDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** The smoke config's settings, with artifacts under `artifacts` and optional section overrides. */
export function smokeYaml(opts: {
  name: string;
  artifacts: string;
  data?: string;
  grpo?: string;
  runtime?: string;
}): string {
  return `name: ${opts.name}
seed: 7
model: { preset: tiny, tokenizer: byte }
data: ${opts.data ?? '{ source: synthetic, synthetic: { writing: 12, math: 12, seed: 7 }, evalFraction: 0.25, maxPromptTokens: 64 }'}
coldStart: { enabled: true, steps: 20, batchSize: 8, lr: 0.003, warmupSteps: 2 }
grpo: ${opts.grpo ?? '{ iterations: 2, promptsPerIteration: 4, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 48 }'}
eval: { every: 1, prompts: 4, maxNewTokens: 48 }
runtime: ${opts.runtime ?? `{ rolloutShards: 2, continueAsNewEvery: 1, maxStageAttempts: 2, artifacts: ${JSON.stringify(opts.artifacts)} }`}
`;
}

export function pool(): pg.Pool {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set: run the tests through jest (globalSetup starts the services)');
  const p = new pg.Pool({ connectionString: url, max: 2 });
  // An idle connection that loses its server (a test that restarts PostgreSQL) must not crash the test.
  p.on('error', () => {});
  return p;
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 500,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export const lastLine = (text: string): string => text.trim().split('\n').pop() ?? '';

/**
 * Terminates the workflows of runs a test started that are still open (a failed assertion, a blocked
 * run): the Temporal server outlives the test run and its database, and an open workflow would
 * otherwise wait there forever.
 */
export async function terminateOpenRuns(runIds: Iterable<string>): Promise<void> {
  const ids = [...runIds];
  if (ids.length === 0 || !process.env.TEMPORAL_ADDRESS) return;
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  try {
    const client = new Client({ connection });
    for (const id of ids) {
      const handle = client.workflow.getHandle(id);
      try {
        if ((await handle.describe()).status.name === 'RUNNING') await handle.terminate('test cleanup');
      } catch {
        // not found or already closed
      }
    }
  } finally {
    await connection.close();
  }
}

/** The run id in the last line of `train --json` / `show --json` output. */
export function runIdOf(stdout: string): string {
  return (JSON.parse(lastLine(stdout)) as { id: string }).id;
}

/** What one integration test file shares: its queue prefix, a pool, the runs it started, its one worker. */
export interface IntegrationFile {
  env: NodeJS.ProcessEnv;
  db: pg.Pool;
  /** Run ids whose workflows are terminated after the file if still open. */
  started: string[];
  /** The file's worker, started on first use. */
  worker(): Promise<WorkerProcess>;
}

/**
 * The setup and teardown every integration test file repeated: after the file, the open workflows of
 * its runs are terminated, its worker is stopped, its pool closed and its temporary directories removed.
 */
export function integrationFile(name: string, extraEnv: Record<string, string> = {}): IntegrationFile {
  const env = testEnv(`${name}-${process.pid}-`, extraEnv);
  const db = pool();
  const started: string[] = [];
  let worker: Promise<WorkerProcess> | undefined;
  afterAll(async () => {
    await terminateOpenRuns(started);
    await (await worker?.catch(() => undefined))?.stop();
    await db.end();
    removeTmpDirs();
  });
  return { env, db, started, worker: () => (worker ??= startWorker(env)) };
}
