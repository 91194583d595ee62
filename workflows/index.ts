/** The workflow bundle's entry point (Worker `workflowsPath`): every workflow type the workers run. */
export { trainingRun } from './trainingRun';
export { sweepRun } from './sweep';
