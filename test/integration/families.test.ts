/**
 * A run that starts from an HF checkpoint of another family trains it as that family end to end: the
 * architecture comes from the checkpoint's config.json (no preset, no overrides), and every checkpoint
 * the run writes keeps the family's model_type, architectures and parameter names.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { saveCheckpoint } from '../../engine/checkpoint';
import { llamaConfigSchema, modelPresets } from '../../engine/config';
import { decodeSafetensors } from '../../engine/safetensors';
import { initWeights } from '../../engine/weights';
import type { RunSummary } from '../../db/queries';
import {
  lastLine,
  pool,
  removeTmpDirs,
  runCli,
  smokeYaml,
  startWorker,
  terminateOpenRuns,
  testEnv,
  tmpDir,
  writeConfig,
  type WorkerProcess,
} from './helpers';

jest.setTimeout(240_000);

const env = testEnv(`families-${process.pid}-`);
let worker: WorkerProcess | undefined;
let db: pg.Pool;
const started: string[] = [];

beforeAll(() => {
  db = pool();
});

afterAll(async () => {
  await terminateOpenRuns(started);
  await worker?.stop();
  await db?.end();
  removeTmpDirs();
});

test('a run from a Qwen3 checkpoint trains a Qwen3 model and writes Qwen3 checkpoints', async () => {
  const dir = tmpDir();
  const start = join(dir, 'qwen3-start');
  // Qwen3's traits: q/k norms and a head_dim (16) that is not hidden_size / heads (8).
  const config = llamaConfigSchema.parse({ ...modelPresets.tiny, model_type: 'qwen3', head_dim: 16 });
  await saveCheckpoint(start, { config, weights: initWeights(config, 3) });
  worker = await startWorker(env);
  const yaml = smokeYaml({
    name: 'qwen3-run',
    artifactsDir: join(dir, 'artifacts'),
    grpo: '{ iterations: 1, promptsPerIteration: 4, groupSize: 2, miniBatchSize: 8, lr: 0.001, maxNewTokens: 16 }',
  }).replace(
    'model: { preset: tiny, tokenizer: byte }',
    `model: { checkpoint: ${JSON.stringify(start)}, tokenizer: byte }`,
  );
  const res = await runCli(['train', writeConfig(yaml), '--wait', '--json'], env);
  const summary = JSON.parse(lastLine(res.stdout)) as RunSummary;
  started.push(summary.id);
  if (res.code !== 0) throw new Error(`train exited ${res.code}\n${res.stderr}\nworker:\n${worker.output()}`);
  expect(summary.status).toBe('completed');

  const { rows } = await db.query<{ uri: string }>(
    "select uri from artifacts where run_id = $1 and kind = 'checkpoint' and name = 'model.safetensors' order by iteration",
    [summary.id],
  );
  expect(rows).toHaveLength(2); // after SFT and after the iteration
  const startNames = [...decodeSafetensors(await readFile(join(start, 'model.safetensors'))).tensors.keys()].sort();
  for (const { uri } of rows) {
    const ckpt = join(fileURLToPath(uri), '..');
    const written = JSON.parse(await readFile(join(ckpt, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(written).toMatchObject({ model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], head_dim: 16 });
    const names = [...decodeSafetensors(await readFile(fileURLToPath(uri))).tensors.keys()];
    expect(names).toContain('model.layers.1.self_attn.k_norm.weight');
    expect(names.sort()).toEqual(startNames);
  }
});
