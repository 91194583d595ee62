// Public surface of the engine (model, training, graph building); other engine modules are imported directly.
export { llamaConfigSchema, modelPresets, type LlamaConfig } from './config';
export { Graph, type Value, type Dim, type DType, type FloatType } from './graph';
export { gradients, gradRules, type GradRule } from './autodiff';
export { Session, checkProviders, DEFAULT_PROVIDERS, type Feeds, type TensorData } from './ort';
export {
  LlamaModel,
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
