/**
 * What travels through Temporal between the workflow and the activities: ids, artifact references and
 * scalar metrics, never tensors or rollouts (those live in the artifact store). Pure types, so the
 * workflow bundle can import them.
 */

/** A file in the artifact store; `sha256` is checked when it is read back. */
export interface ArtifactRef {
  uri: string;
  sha256: string;
  bytes: number;
}

/** A checkpoint directory (HF layout: model.safetensors, config.json, optimizer.safetensors, trainer_state.json). */
export interface CheckpointRef {
  uri: string;
  iteration: number;
  /** sha256 of model.safetensors (of adapter_model.safetensors for a LoRA checkpoint on a base, see base.json). */
  sha256: string;
  /** sha256 of every file the directory holds, by file name: loading refuses any that differs, is missing or is extra. */
  files: Record<string, string>;
}

export interface DatasetRef {
  artifact: ArtifactRef;
  hash: string;
  train: number;
  eval: number;
}

export interface StageInput {
  runId: string;
  iteration: number;
}

export interface RolloutInput extends StageInput {
  shard: number;
  shards: number;
  dataset: DatasetRef;
  checkpoint: CheckpointRef;
  /** Index into the training prompts where this iteration's batch starts (wraps around). */
  dataPosition: number;
}

export interface RolloutOutput {
  artifact: ArtifactRef;
  prompts: number;
  samples: number;
  meanResponseTokens: number;
}

export interface ScoreInput extends StageInput {
  shard: number;
  checkpoint: CheckpointRef;
  rollout: RolloutOutput;
}

export interface ScoreOutput {
  artifact: ArtifactRef;
  samples: number;
}

export interface RewardInput extends StageInput {
  scores: ScoreOutput[];
  /** The OPERA EMA baseline before this batch (null before the first batch). */
  ema: number | null;
}

export interface RewardOutput {
  artifact: ArtifactRef;
  ema: number | null;
  metrics: Record<string, number>;
}

export interface UpdateInput extends StageInput {
  checkpoint: CheckpointRef;
  reference: CheckpointRef;
  rewards: RewardOutput;
  /** State saved with the new checkpoint so that a resumed run continues exactly. */
  ema: number | null;
  dataPosition: number;
}

export interface UpdateOutput {
  checkpoint: CheckpointRef;
  optimizer: ArtifactRef | null;
  ema: number | null;
  dataPosition: number;
  metrics: Record<string, number>;
}

export interface EvaluateInput extends StageInput {
  dataset: DatasetRef;
  checkpoint: CheckpointRef;
}

export interface EvalResult {
  iteration: number;
  prompts: number;
  reward: number;
  ppl: number;
  reflection: number;
  /** Mean log-probability of the reference answer given prompt + response. */
  refLogp: number;
  /** Exact match on math prompts (null when the eval set has none). */
  exactMatch: number | null;
  meanResponseTokens: number;
  /** Share of responses passing their hidden check (opera/checkers.ts), over the prompts that have one (null: none has). */
  hiddenCheck: number | null;
  /**
   * Among the responses' segments that contain a guiding keyword, the share counted as a useful reflection
   * (reference log-prob rose over the previous checkpoint); null when no segment has a keyword.
   */
  reflectionUseful: number | null;
  /** The same numbers per task type present in the eval prompts. */
  taskTypes: Record<string, EvalTaskResult>;
}

/** One task type's evaluation: means over its prompts. */
export interface EvalTaskResult {
  prompts: number;
  /** Over its prompts that have a hidden check (null: none has). */
  hiddenCheck: number | null;
  /** `exactMatch` of opera/reward.ts (math: the extracted answer; others: the whole final answer). */
  exactMatch: number;
  refLogp: number;
  responseTokens: number;
  /** Reasoning segments per response. */
  segments: number;
  /** OPERA reward. */
  operaReward: number;
}

export interface SftOutput {
  checkpoint: CheckpointRef;
  steps: number;
  finalLoss: number | null;
}

/** Everything a continuation needs: what continue-as-new carries, and what `recordedRunState` rebuilds from the database. */
export interface RunState {
  /** Completed GRPO iterations. */
  iteration: number;
  dataset: DatasetRef;
  /** Frozen post-SFT policy, the KL reference. */
  reference: CheckpointRef;
  checkpoint: CheckpointRef;
  optimizer: ArtifactRef | null;
  ema: number | null;
  dataPosition: number;
  evalBefore: EvalResult | null;
  evalLatest: EvalResult | null;
}
