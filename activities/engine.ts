/**
 * What the activities need from the engine, loaded once per worker process: tokenizers, models
 * (cached by checkpoint uri: rollout, scoring and evaluation of one iteration share the policy), and
 * the OPERA scoring of responses (reference log-probs at every checkpoint, one tree-masked forward each).
 */
import { basename, join } from 'node:path';
import {
  ADAPTER_FILES,
  ALL_CHECKPOINT_FILES,
  CHECKPOINT_FILES,
  loadCheckpoint,
  saveCheckpoint,
  type BaseRef,
  type Checkpoint,
  type CheckpointFile,
} from '../engine/checkpoint';
import { LlamaModel } from '../engine/model';
import type { ChatTemplateMode } from '../engine/chat-template';
import { contextTokens, promptTokens, tokenizerFromSpec, type Tokenizer } from '../engine/tokenizer';
import { scoringContexts } from '../opera/reward';
import type { Db } from '../db/client';
import { recordArtifact } from '../db/queries';
import { cachedPromise } from '../util/cache';
import { hashFileCached } from '../util/files';
import { inPhase } from '../util/phase';
import { fetchCheckpointDir, type ArtifactStore } from './store';
import type { ArtifactRef, CheckpointRef } from './types';

const tokenizers = new Map<string, Promise<Tokenizer>>();
/** `model.tokenizer` with `data.chatTemplate`: every stage of a run must format prompts alike. */
export const getTokenizer = (spec: string, chatTemplate: ChatTemplateMode = 'auto'): Promise<Tokenizer> =>
  cachedPromise(tokenizers, `${chatTemplate}:${spec}`, () => tokenizerFromSpec(spec, chatTemplate));

export { contextTokens, promptTokens };

/** Inference models by checkpoint uri; a few at a time (policy, reference, the next policy). */
const models = new Map<string, Promise<LlamaModel>>();
const MAX_MODELS = 3;

export function inferenceModel(ref: CheckpointRef, providers: string[]): Promise<LlamaModel> {
  const key = `${ref.uri}#${ref.sha256}#${providers.join(',')}`;
  const cached = models.get(key);
  if (cached) {
    models.delete(key);
    models.set(key, cached); // most recently used last
    return cached;
  }
  const m = cachedPromise(models, key, () =>
    loadCheckpointChecked(ref, { optimizer: false }).then(
      (ckpt) => new LlamaModel(ckpt.config, ckpt.weights, { providers }),
    ),
  );
  while (models.size > MAX_MODELS) {
    const oldest = models.keys().next().value;
    if (oldest === undefined) break;
    models.delete(oldest);
  }
  return m;
}

/** name → sha256 of the files a save wrote (what a CheckpointRef or a partial-checkpoint heartbeat records). */
export const fileHashes = (files: CheckpointFile[]): Record<string, string> =>
  Object.fromEntries(files.map((f) => [basename(f.path), f.sha256]));

/**
 * Checks a checkpoint directory against the hashes recorded when it was written: every checkpoint file
 * present must be recorded and match (a stray optimizer file would otherwise be loaded as state), and
 * every recorded file must be present.
 */
export async function verifyCheckpointFiles(
  dir: string,
  files: Record<string, string>,
  /** Files not needed by this load (the optimizer state of a checkpoint loaded for inference): not read. */
  skip: readonly string[] = [],
): Promise<void> {
  const problems: string[] = [];
  for (const name of ALL_CHECKPOINT_FILES) {
    if (skip.includes(name)) continue;
    const recorded = files[name];
    let digest: string;
    try {
      digest = (await hashFileCached(join(dir, name))).sha256;
    } catch {
      if (recorded !== undefined) problems.push(`${name} is missing`);
      continue;
    }
    if (recorded === undefined) problems.push(`${name} is present but was not recorded`);
    else if (digest !== recorded) problems.push(`${name} has sha256 ${digest}, recorded ${recorded}`);
  }
  for (const name of Object.keys(files)) {
    if (skip.includes(name)) continue;
    if (!ALL_CHECKPOINT_FILES.includes(name)) problems.push(`${name} is recorded but is not a checkpoint file`);
  }
  if (problems.length > 0)
    throw new Error(`checkpoint ${dir} does not match its recorded hashes: ${problems.join('; ')}`);
}

/** The file whose sha256 names a checkpoint's weights: model.safetensors, or the adapter of a LoRA checkpoint on a base. */
const weightsFile = (files: Record<string, string>): string =>
  files[CHECKPOINT_FILES.model] !== undefined ? CHECKPOINT_FILES.model : ADAPTER_FILES.weights;

/** The local directory of a LoRA checkpoint's base: where it is, or (in an object store) its fetched copy. */
export const resolveBaseDir = (base: BaseRef): Promise<string> => fetchCheckpointDir(base.dir, base.files);

/**
 * Loads a checkpoint (fetched from the store when remote) after checking every file against the recorded
 * sha256. `optimizer: false` (inference) neither fetches, checks nor loads the optimizer state: a rollout
 * machine downloads a third of what the trainer does.
 */
export async function loadCheckpointChecked(
  ref: CheckpointRef,
  opts: { optimizer?: boolean } = {},
): Promise<Checkpoint> {
  if (!ref.files || ref.files[weightsFile(ref.files)] !== ref.sha256) {
    throw new Error(
      `checkpoint ${ref.uri}: its reference records no per-file hashes (written by an older operaflow?), so it cannot be verified`,
    );
  }
  const skip: string[] = opts.optimizer === false ? [CHECKPOINT_FILES.optimizer] : [];
  const needed = Object.fromEntries(Object.entries(ref.files).filter(([name]) => !skip.includes(name)));
  const dir = await fetchCheckpointDir(ref.uri, needed);
  return inPhase('storage', async () => {
    await verifyCheckpointFiles(dir, ref.files, skip);
    return loadCheckpoint(dir, undefined, { baseDir: resolveBaseDir, optimizer: opts.optimizer });
  });
}

/** Writes a checkpoint directory under the store's localRoot and publishes each file (their uploads in parallel). */
export function saveCheckpointPublished(
  store: ArtifactStore,
  dir: string,
  ckpt: Checkpoint,
): Promise<(CheckpointFile & { uri: string })[]> {
  return inPhase('storage', async () => {
    const written = await saveCheckpoint(dir, ckpt);
    return Promise.all(written.map(async (f) => ({ ...f, uri: await store.publish(f) })));
  });
}

/** Saves a checkpoint directory (under the store's localRoot), publishes and records each file; the optimizer file is its own artifact kind. */
export async function saveCheckpointRecorded(
  db: Db,
  store: ArtifactStore,
  runId: string,
  iteration: number,
  dir: string,
  ckpt: Checkpoint,
): Promise<{ checkpoint: CheckpointRef; optimizer: ArtifactRef | null }> {
  const files = await saveCheckpointPublished(store, dir, ckpt);
  let optimizer: ArtifactRef | null = null;
  for (const f of files) {
    const name = basename(f.path);
    const ref: ArtifactRef = { uri: f.uri, sha256: f.sha256, bytes: f.bytes };
    const kind = name === CHECKPOINT_FILES.optimizer ? 'optimizer' : 'checkpoint';
    await recordArtifact(db, { runId, kind, iteration, name, ...ref });
    if (kind === 'optimizer') optimizer = ref;
  }
  const hashes = fileHashes(files);
  const weightsSha = hashes[weightsFile(hashes)];
  if (!weightsSha) throw new Error(`saveCheckpoint wrote no ${weightsFile(hashes)} in ${dir}`);
  return { checkpoint: { uri: store.uriOf(dir), iteration, sha256: weightsSha, files: hashes }, optimizer };
}

export interface ScoredResponse {
  logpFull: number;
  logpInitial: number;
  logpSegments: number[];
  /**
   * Mean per-token probability (not log) of the reference after prompt + response: the `likelihood`
   * reward kind's score. Absent from score artifacts written before it existed.
   */
  probFull?: number;
}

/**
 * The OPERA log-probs of one response (OPERA.md, "The reward"): mean log p of the reference after
 * prompt + response, after prompt + "<think>", and after each reasoning step; and the mean per-token
 * probability of the reference after prompt + response. The initial and segment contexts are prefixes
 * of one another, so they are one scoring item with several checkpoints.
 */
export async function scoreResponses(
  model: LlamaModel,
  tok: Tokenizer,
  items: { prompt: string; reference: string; response: string }[],
): Promise<ScoredResponse[]> {
  const scoringItems: { context: number[]; checkpoints: number[]; target: number[] }[] = [];
  for (const { prompt, reference, response } of items) {
    const target = tok.encode(reference);
    if (target.length === 0) throw new Error('scoring: empty reference answer');
    // With an empty prompt the contexts are what follows the prompt; contextTokens puts the prompt in
    // front as rollouts saw it (through the chat template when there is one).
    const ctx = scoringContexts('', response);
    const full = contextTokens(tok, prompt, ctx.full);
    const last = ctx.segments[ctx.segments.length - 1] ?? ctx.initial;
    const context = contextTokens(tok, prompt, last);
    const checkpoints = [ctx.initial, ...ctx.segments].map((text) => contextTokens(tok, prompt, text).length);
    scoringItems.push({ context: full, checkpoints: [full.length], target });
    scoringItems.push({ context, checkpoints, target });
  }
  const scores = await inPhase('compute', () => model.checkpointScores(scoringItems));
  return items.map((_, k) => {
    const full = scores[2 * k]![0]!;
    const chain = scores[2 * k + 1]!.map((c) => c.meanLogp);
    return { logpFull: full.meanLogp, logpInitial: chain[0]!, logpSegments: chain.slice(1), probFull: full.meanProb };
  });
}

/** Learning rate with linear warm-up, then constant. */
export const warmupLr = (lr: number, warmupSteps: number, step: number): number =>
  warmupSteps > 0 && step < warmupSteps ? (lr * (step + 1)) / warmupSteps : lr;
