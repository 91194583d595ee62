#!/usr/bin/env node
// `operaflow` bin entry: runs the TypeScript CLI through tsx's CommonJS loader (no build step).
require('tsx/cjs');
require('./operaflow.ts').cli();
