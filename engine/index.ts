// Public surface of the engine: what a user scripts against (load a checkpoint, run, sample, train, save).
// Other engine modules are imported directly inside the project.
export { llamaConfigSchema, modelPresets, MODEL_TYPES, type LlamaConfig, type ModelType } from './config';
export { loadCheckpoint, saveCheckpoint, type Checkpoint } from './checkpoint';
export { sample, type SampleOptions, type SampleRequest, type SampleResult } from './sampler';
export { loadHfTokenizer, ByteTokenizer, type Tokenizer } from './tokenizer';
export { Graph, type Value, type Dim, type DType, type FloatType } from './graph';
export { gradients, gradRules, type GradRule } from './autodiff';
export { Session, checkProviders, DEFAULT_PROVIDERS, type Feeds, type TensorData } from './ort';
export {
  LlamaModel,
  /** The model class of every family (Llama, Mistral, Qwen2, Qwen3): forward, token log-probs, checkpoint scoring. */
  LlamaModel as CausalLM,
  initWeights,
  parameterShapes,
  parameterNames,
  causalBias,
  MASKED,
  type Weights,
  type KVCache,
  type ForwardInput,
} from './model';
export {
  Trainer,
  adamwDefaults,
  sftObjective,
  type Objective,
  type TrainBatch,
  type TrainLoop,
  type StepResult,
  type OptimizerState,
  type AdamWOptions,
} from './trainer';
