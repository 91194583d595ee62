/**
 * `operaflow`: the command line of the product. This file parses arguments (strictly: an unknown flag or
 * an extra argument is an error) and dispatches; each command lives in scripts/cli/.
 *
 * Services: DATABASE_URL / TEMPORAL_ADDRESS when set, else the local ones (started if needed).
 * OPERAFLOW_QUEUE_PREFIX: prepended to the task queue names (`rollout`, `train`) by `train` and `worker`,
 * so separate deployments (or concurrent test runs) can share one Temporal server without stealing work.
 * OPERAFLOW_HEARTBEAT_TIMEOUT (seconds, default 10): how long a silent compute activity may go before
 * Temporal gives it to another worker; a run takes it from the environment of `train`.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { checkEnvironment } from '../util/env';
import { UsageError } from './cli/connect';
import { control } from './cli/control';
import { runs, show } from './cli/inspect';
import { train } from './cli/train';
import { verify } from './cli/verify';
import { exportRun } from './cli/export';
import { exportMetrics } from './cli/export-metrics';
import { compare } from './cli/compare';
import { sweep, type SweepFlags } from './cli/sweep';
import { ui, type UiFlags } from './cli/ui';
import { worker } from './cli/worker';
import { gpu } from './cli/gpu';

const USAGE = `usage:
  operaflow train <config.yaml> [--wait] [--json] [--id <run>] [--group <name>]
                                                                   validate, record and start (or attach to) a run
  operaflow sweep <config.yaml> [--seeds 0-4] [--set key=v1,v2 …] [--parallel 1] [--group <name>] [--wait] [--json]
                                                                   every combination of --set values × seed as runs of one group, N at a time
  operaflow compare <run…> | --group <name> [--json]              final and best metrics per variant, mean ± std over seeds
  operaflow worker [--queues rollout,train]                        poll task queues (one process)
  operaflow runs [--group <name>] [--json]                         list runs (of one group)
  operaflow show <run> [--json]                                    status, stages with attempts, latest metrics
  operaflow pause|resume|cancel <run>                              operator commands (resume also revives a failed/cancelled run)
  operaflow retry <run>                                            retry the stage a blocked run waits on
  operaflow verify <run> [--repair] [--json]                       check the run's records and files; --repair re-derives lost rows
  operaflow export <run> --out <dir> [--iteration N] [--merged|--adapter]   the policy as an HF checkpoint (merged) or a PEFT adapter
  operaflow export-metrics <run> | --group <name> [--format csv|jsonl]   every metric the run (the group's runs) recorded, to stdout
  operaflow ui [--port 8080] [--host 127.0.0.1] [--allow-actions]   the web dashboard (OPERAFLOW_UI_TOKEN beyond loopback)
  operaflow gpu setup                                              install ONNX Runtime's CUDA provider and CUDA libraries (from PyPI)
  operaflow gpu check [--providers cuda]                           run a small graph on the provider and compare it with the CPU`;

type Options = NonNullable<ParseArgsConfig['options']>;
type Flags = Record<string, string | string[] | boolean | undefined>;

interface Command {
  /** Names of the positional arguments: required, `name?` optional, `name…` any number (the last one). */
  args: string[];
  options: Options;
  run(args: string[], flags: Flags): Promise<number>;
}

const json: Options = { json: { type: 'boolean' } };
const controlCommand = (name: 'pause' | 'resume' | 'cancel' | 'retry'): Command => ({
  args: ['run'],
  options: {},
  run: ([id]) => control(name, id!),
});

const COMMANDS: Record<string, Command> = {
  train: {
    args: ['config.yaml'],
    options: { wait: { type: 'boolean' }, ...json, id: { type: 'string' }, group: { type: 'string' } },
    run: ([file], f) => train(file!, f as { wait?: boolean; json?: boolean; id?: string; group?: string }),
  },
  worker: { args: [], options: { queues: { type: 'string' } }, run: (_, f) => worker(f as { queues?: string }) },
  runs: { args: [], options: { ...json, group: { type: 'string' } }, run: (_, f) => runs(f) as Promise<number> },
  show: { args: ['run'], options: json, run: ([id], f) => show(id!, f) },
  pause: controlCommand('pause'),
  resume: controlCommand('resume'),
  cancel: controlCommand('cancel'),
  retry: controlCommand('retry'),
  export: {
    args: ['run'],
    options: {
      out: { type: 'string' },
      iteration: { type: 'string' },
      merged: { type: 'boolean' },
      adapter: { type: 'boolean' },
    },
    run: ([id], f) => exportRun(id!, f as { out?: string; iteration?: string; merged?: boolean; adapter?: boolean }),
  },
  'export-metrics': {
    // The run, or --group: export-metrics says which is missing.
    args: ['run?'],
    options: { format: { type: 'string' }, group: { type: 'string' } },
    run: ([id], f) => exportMetrics(id, f as { format?: string; group?: string }),
  },
  sweep: {
    args: ['config.yaml'],
    options: {
      seeds: { type: 'string' },
      set: { type: 'string', multiple: true },
      parallel: { type: 'string' },
      group: { type: 'string' },
      wait: { type: 'boolean' },
      ...json,
    },
    run: ([file], f) => sweep(file!, f as SweepFlags),
  },
  compare: {
    args: ['run…'],
    options: { group: { type: 'string' }, ...json },
    run: (ids, f) => compare(ids, f as { group?: string; json?: boolean }),
  },
  ui: {
    args: [],
    options: { port: { type: 'string' }, host: { type: 'string' }, 'allow-actions': { type: 'boolean' } },
    run: (_, f) => ui(f as UiFlags),
  },
  gpu: {
    args: ['setup|check'],
    options: { providers: { type: 'string' } },
    run: ([action], f) => gpu(action!, f as { providers?: string }),
  },
  verify: {
    args: ['run'],
    options: { repair: { type: 'boolean' }, ...json },
    run: ([id], f) => verify(id!, f as { repair?: boolean; json?: boolean }),
  },
};

/** Parses `argv` for `name`: unknown flags, missing or extra arguments are usage errors. */
function parseCommand(name: string, command: Command, argv: string[]): { args: string[]; flags: Flags } {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: command.options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(`${name}: ${(err as Error).message}`);
  }
  const { positionals } = parsed;
  const required = command.args.filter((a) => !a.endsWith('?') && !a.endsWith('…'));
  const most = command.args.at(-1)?.endsWith('…') ? Infinity : command.args.length;
  if (positionals.length < required.length)
    throw new UsageError(`${name} needs ${required.map((a) => `<${a}>`).join(' ')}`);
  if (positionals.length > most) throw new UsageError(`${name}: unexpected argument "${positionals[most]}"`);
  return { args: positionals, flags: parsed.values as Flags };
}

export async function main(): Promise<number> {
  const [name, ...rest] = process.argv.slice(2);
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    console.log(USAGE);
    return name === undefined ? 64 : 0;
  }
  const command = COMMANDS[name];
  checkEnvironment();
  try {
    if (!command) throw new UsageError(`unknown command "${name}"`);
    const { args, flags } = parseCommand(name, command, rest);
    return await command.run(args, flags);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n${USAGE}`);
      return 64;
    }
    throw err;
  }
}

/** Entry point for both `tsx scripts/operaflow.ts` and the `operaflow` bin shim (scripts/operaflow.js). */
export function cli(): void {
  // A reader that stops early (`operaflow show <run> | head`) closes the pipe: the rest of the output is
  // unwanted, not an error (without this, Node crashes on the unhandled EPIPE).
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  main().then(
    (code) => {
      // Not process.exit(): pending stdout (a large --json line into a pipe) must drain first.
      process.exitCode = code;
      setTimeout(() => process.exit(code), 10_000).unref();
    },
    (err: Error) => {
      console.error(err.message);
      process.exitCode = 1;
      setTimeout(() => process.exit(1), 10_000).unref();
    },
  );
}

if (require.main === module) cli();
