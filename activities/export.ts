/**
 * `operaflow export <run> [--iteration N] --out DIR [--merged | --adapter]`: a run's policy at an
 * iteration (default: its last completed one), hash-checked, as a standalone HF checkpoint (`merged`: the
 * adapter folded into the weights, loadable with AutoModelForCausalLM) or, for a LoRA run, as a PEFT
 * adapter directory (`adapter`: adapter_config.json + adapter_model.safetensors on the run's base).
 */
import type { Db } from '../db/client';
import { completedStageOutput, lastCompletedUpdate, requireRun } from '../db/queries';
import { adapterTensors, saveCheckpoint } from '../engine/checkpoint';
import { isAdapterName, mergeLora, savePeftAdapter } from '../engine/lora';
import { parameterShapes } from '../engine/model';
import { loadCheckpointChecked } from './engine';
import type { CheckpointRef } from './types';

export type ExportFormat = 'merged' | 'adapter';

/** The checkpoint of iteration N: the cold-start SFT's for 0, else that iteration's update's. */
async function checkpointAt(db: Db, runId: string, iteration?: number): Promise<CheckpointRef> {
  const it = iteration ?? (await lastCompletedUpdate(db, runId))?.iteration ?? 0;
  const key = { runId, stage: it === 0 ? 'coldStartSft' : 'update', iteration: it, shard: 0 };
  const done = await completedStageOutput(db, key);
  if (!done)
    throw new Error(`run ${runId} has no completed ${key.stage} at iteration ${it} (see \`operaflow show ${runId}\`)`);
  return (done.output as { checkpoint: CheckpointRef }).checkpoint;
}

export async function exportPolicy(
  db: Db,
  runId: string,
  options: { out: string; format: ExportFormat; iteration?: number },
): Promise<{ iteration: number; files: string[] }> {
  const run = await requireRun(db, runId);
  const ref = await checkpointAt(db, runId, options.iteration);
  const ckpt = await loadCheckpointChecked(ref);
  const { lora, ...plain } = ckpt.config;
  if (options.format === 'adapter') {
    if (!lora) throw new Error(`run ${runId} trained all weights (no model.lora): export it --merged`);
    const base = (run.config as { model?: { checkpoint?: string } }).model?.checkpoint ?? 'base';
    const files = await savePeftAdapter(options.out, lora, adapterTensors(ckpt.config, ckpt.weights), base);
    return { iteration: ref.iteration, files: files.map((f) => f.path) };
  }
  const weights = lora
    ? mergeLora(
        new Map([...ckpt.weights].filter(([name]) => !isAdapterName(name))),
        parameterShapes(plain),
        ckpt.weights,
        lora,
      )
    : ckpt.weights;
  const files = await saveCheckpoint(options.out, { config: plain, weights });
  return { iteration: ref.iteration, files: files.map((f) => f.path) };
}
