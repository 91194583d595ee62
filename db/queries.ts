/**
 * Every read and write the activities, the workflow's short activities and the CLI make: no SQL lives
 * outside db/. Grouped by what they touch: runs and stage attempts (runs.ts), what stages record
 * (records.ts), and reading a run back (summary.ts).
 */
export * from './runs';
export * from './records';
export * from './summary';
