/**
 * A run that starts from an HF checkpoint of another family trains it as that family end to end: the
 * architecture comes from the checkpoint's config.json (no preset, no overrides), and every checkpoint
 * the run writes keeps the family's model_type, architectures and parameter names.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint, saveCheckpoint, type Checkpoint } from '../../engine/checkpoint';
import { loadPeftAdapter } from '../../engine/lora';
import { LlamaModel, causalBias } from '../../engine/model';
import { llamaConfigSchema, modelPresets } from '../../engine/config';
import { decodeSafetensors } from '../../engine/safetensors';
import { initWeights } from '../../engine/weights';
import type { RunSummary } from '../../db/queries';
import { lastLine, runCli, smokeYaml, tmpDir, writeConfig, type WorkerProcess, integrationFile } from './helpers';

jest.setTimeout(240_000);

const file = integrationFile('families');
const { env, db, started } = file;
let worker: WorkerProcess | undefined;

test('a run from a Qwen3 checkpoint trains a Qwen3 model and writes Qwen3 checkpoints', async () => {
  const dir = tmpDir();
  const start = join(dir, 'qwen3-start');
  // Qwen3's traits: q/k norms and a head_dim (16) that is not hidden_size / heads (8).
  const config = llamaConfigSchema.parse({ ...modelPresets.tiny, model_type: 'qwen3', head_dim: 16 });
  await saveCheckpoint(start, { config, weights: initWeights(config, 3) });
  worker = await file.worker();
  const yaml = smokeYaml({
    name: 'qwen3-run',
    artifacts: join(dir, 'artifacts'),
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

// Catches: model.lora accepted and ignored, the base weights trained or rewritten with other values, the
// adapter missing from the checkpoints the run passes on (rollouts, the KL reference, the next update).
test('a LoRA run from a checkpoint trains the adapter only: each checkpoint is the PEFT adapter, naming the frozen base by its hashes', async () => {
  const dir = tmpDir();
  const start = join(dir, 'llama-start');
  const config = llamaConfigSchema.parse({ ...modelPresets.tiny });
  await saveCheckpoint(start, { config, weights: initWeights(config, 5) });
  worker ??= await file.worker();
  const yaml = smokeYaml({
    name: 'lora-run',
    artifacts: join(dir, 'artifacts'),
    grpo: '{ iterations: 2, promptsPerIteration: 4, groupSize: 2, miniBatchSize: 8, lr: 0.01, maxNewTokens: 16 }',
  }).replace(
    'model: { preset: tiny, tokenizer: byte }',
    `model: { checkpoint: ${JSON.stringify(start)}, tokenizer: byte, lora: { rank: 4, alpha: 8, targetModules: [q_proj, v_proj, down_proj] } }`,
  );
  const res = await runCli(['train', writeConfig(yaml), '--wait', '--json'], env);
  const summary = JSON.parse(lastLine(res.stdout)) as RunSummary;
  started.push(summary.id);
  if (res.code !== 0) throw new Error(`train exited ${res.code}\n${res.stderr}\nworker:\n${worker.output()}`);
  expect(summary.status).toBe('completed');

  const { rows } = await db.query<{ iteration: number; name: string; uri: string; sha256: string; bytes: number }>(
    "select iteration, name, uri, sha256, bytes from artifacts where run_id = $1 and kind = 'checkpoint' order by iteration, name",
    [summary.id],
  );
  const baseBytes = (await stat(join(start, 'model.safetensors'))).size;
  const adapters = new Set<string>();
  for (const iteration of [0, 1, 2]) {
    const files = rows.filter((r) => r.iteration === iteration);
    // The adapter alone: the frozen base is named by base.json (with its files' sha256), not rewritten.
    expect(files.map((r) => r.name)).toEqual(
      expect.arrayContaining(['adapter_config.json', 'adapter_model.safetensors', 'base.json', 'config.json']),
    );
    expect(files.map((r) => r.name)).not.toContain('model.safetensors');
    const adapter = files.find((r) => r.name === 'adapter_model.safetensors')!;
    expect(Number(adapter.bytes)).toBeLessThan(baseBytes / 4);
    adapters.add(adapter.sha256);
    const ckptDir = join(fileURLToPath(adapter.uri), '..');
    const base = JSON.parse(await readFile(join(ckptDir, 'base.json'), 'utf8')) as { dir: string; files: object };
    expect(base.dir).toBe(start);
    const peft = JSON.parse(await readFile(join(ckptDir, 'adapter_config.json'), 'utf8'));
    expect(peft).toMatchObject({
      peft_type: 'LORA',
      r: 4,
      lora_alpha: 8,
      target_modules: ['q_proj', 'v_proj', 'down_proj'],
    });
  }
  expect(adapters.size).toBe(3); // SFT and each update moved the adapter

  // Export: the adapter as PEFT writes it, and the merged model, which computes what base + adapter does.
  const adapterOut = join(dir, 'export-adapter');
  const exported = await runCli(['export', summary.id, '--out', adapterOut, '--adapter', '--iteration', '1'], env);
  expect(exported.stdout).toContain(`exported run ${summary.id} iteration 1 (adapter)`);
  const peft = await loadPeftAdapter(adapterOut);
  expect(peft.spec).toMatchObject({ rank: 4, alpha: 8 });
  const mergedOut = join(dir, 'export-merged');
  expect((await runCli(['export', summary.id, '--out', mergedOut], env)).code).toBe(0);
  const merged = await loadCheckpoint(mergedOut);
  expect(merged.config.lora).toBeUndefined();
  const last = rows.find((r) => r.iteration === 2 && r.name === 'adapter_model.safetensors')!;
  const lora = await loadCheckpoint(join(fileURLToPath(last.uri), '..'));
  const tokens = [[5, 9, 17, 33, 2, 7]];
  const logits = async (c: Checkpoint) =>
    (
      await new LlamaModel(c.config, c.weights).forward({
        tokens,
        positions: [[0, 1, 2, 3, 4, 5]],
        attnBias: causalBias([6], 6),
      })
    ).logits;
  const [a, b] = [await logits(lora), await logits(merged)];
  expect(Math.max(...a.map((x, k) => Math.abs(x - b[k]!)))).toBeLessThanOrEqual(1e-4);
  const refused = await runCli(['export', summary.id, '--out', join(dir, 'x'), '--merged', '--adapter'], env);
  expect(refused.code).toBe(64);

  // The base is trusted by its hashes: changed behind the run's back, every checkpoint on it is refused.
  await writeFile(join(start, 'config.json'), `${await readFile(join(start, 'config.json'), 'utf8')} `);
  const broken = await runCli(['export', summary.id, '--out', join(dir, 'y')], env);
  expect(broken.code).toBe(1);
  expect(broken.stderr).toContain(`the base ${start} named by`);
  expect(broken.stderr).toMatch(/config\.json has sha256 [0-9a-f]{64}, recorded [0-9a-f]{64}/);
});

// Catches: a fresh (seeded) LoRA model with no base on disk for its checkpoints to name.
test('a LoRA run from a fresh model saves its frozen base once and names it from every checkpoint', async () => {
  const dir = tmpDir();
  worker ??= await file.worker();
  const yaml = smokeYaml({
    name: 'lora-fresh',
    artifacts: join(dir, 'artifacts'),
    grpo: '{ iterations: 1, promptsPerIteration: 4, groupSize: 2, miniBatchSize: 8, lr: 0.01, maxNewTokens: 16 }',
  }).replace('model: { preset: tiny, tokenizer: byte }', 'model: { preset: tiny, tokenizer: byte, lora: { rank: 2 } }');
  const res = await runCli(['train', writeConfig(yaml), '--wait', '--json'], env);
  const summary = JSON.parse(lastLine(res.stdout)) as RunSummary;
  started.push(summary.id);
  if (res.code !== 0) throw new Error(`train exited ${res.code}\n${res.stderr}\nworker:\n${worker.output()}`);
  const { rows } = await db.query<{ uri: string }>(
    "select uri from artifacts where run_id = $1 and kind = 'checkpoint' and name = 'base.json' order by iteration",
    [summary.id],
  );
  expect(rows).toHaveLength(2);
  const bases = await Promise.all(rows.map(async (r) => JSON.parse(await readFile(fileURLToPath(r.uri), 'utf8')).dir));
  expect(new Set(bases)).toEqual(new Set([join(dir, 'artifacts', summary.id, 'checkpoints', 'base')]));
  const base = await loadCheckpoint(bases[0]);
  expect(base.config.lora).toBeUndefined();
  expect(base.weights.size).toBeGreaterThan(0);
});
