/**
 * `npm run bench [-- --json] [--quick] [--orchestration-only] [--providers cuda,cpu]`: engine throughput on this machine (and, unless
 * --quick, a LoRA SFT step at Qwen3-0.6B's shape: scripts/bench-qwen3.ts), then what orchestration costs
 * on a real run (scripts/bench-orchestration.ts). Every figure is the median
 * of repeated runs after a warm-up run (which compiles the graphs). Prints a table; with --json the
 * last stdout line is one JSON object with the figures. --quick: fewer repeats and shorter
 * generations, for a smoke run (its numbers are noisier). --providers: the ONNX Runtime execution
 * providers of every figure (default cpu); a provider that cannot run stops the bench with the reason.
 *
 * FLOP counting: matmul FLOPs only (2·m·n·k per product). A training step counts 3× the forward
 * (backward ≈ 2× forward), and the forward counts every projection, the LM head and both attention
 * products over the full T×T score matrix (which is what the graph computes; the causal mask is a bias).
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { type LlamaConfig, dims, modelPresets } from '../engine/config';
import { Graph } from '../engine/graph';
import { LlamaModel, causalBias, initWeights } from '../engine/model';
import { Session, engineStats } from '../engine/ort';
import { uniform } from '../engine/rng';
import { sample } from '../engine/sampler';
import { ByteTokenizer, type Tokenizer } from '../engine/tokenizer';
import { Trainer } from '../engine/trainer';
import { median } from '../util/stats';
import { orchestrationBench, type OrchestrationFigures } from './bench-orchestration';
import { parseProviders } from './cli/gpu';

interface Args {
  json: boolean;
  quick: boolean;
  /** Only the orchestration figures (scripts/bench-orchestration.ts). */
  orchestrationOnly: boolean;
  providers: string[];
}

function parseArgs(argv: string[]): Args {
  const args: Args = { json: false, quick: false, orchestrationOnly: false, providers: ['cpu'] };
  for (let k = 0; k < argv.length; k++) {
    const a = argv[k]!;
    if (a === '--json') args.json = true;
    else if (a === '--quick') args.quick = true;
    else if (a === '--orchestration-only') args.orchestrationOnly = true;
    else if (a === '--providers' || a.startsWith('--providers=')) {
      const value = a === '--providers' ? argv[++k] : a.slice('--providers='.length);
      if (!value || value.startsWith('--'))
        throw new Error('bench: --providers needs a list, e.g. --providers cuda,cpu');
      args.providers = parseProviders(value, 'bench: --providers');
    } else
      throw new Error(
        `bench: unknown argument "${a}" (expected --json, --quick, --orchestration-only, --providers <list>)`,
      );
  }
  return args;
}

type Row = [string, string, string, string];

/** Prints the table of figures, then (with --json) the figures as one JSON line. */
function report(rows: Row[], result: object, json: boolean): void {
  const widths = [0, 1, 2, 3].map((c) =>
    Math.max(...rows.map((r) => r[c]!.length), ['metric', 'value', 'target', 'what'][c]!.length),
  );
  const line = (r: string[]) => `| ${r.map((x, c) => x.padEnd(widths[c]!)).join(' | ')} |`;
  console.log(
    [
      line(['metric', 'value', 'target', 'what']),
      `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
      ...rows.map(line),
    ].join('\n'),
  );
  if (json) console.log(JSON.stringify(result));
}

function orchestrationRows(o: OrchestrationFigures): Row[] {
  return [
    [
      'orchestrationOverheadFraction',
      o.orchestrationOverheadFraction.toFixed(3),
      '≤ 0.03',
      `${o.orchestrationConfig}, local store: (run wall ${o.orchestrationRunSeconds.toFixed(1)} s − compute ${o.orchestrationComputeSeconds.toFixed(1)} s) / wall`,
    ],
    [
      'orchestrationBetweenStagesSeconds',
      o.orchestrationBetweenStagesSeconds.toFixed(2),
      '',
      `of the overhead: no stage running (Temporal hops, workflow steps); storage ${o.orchestrationStorageSeconds.toFixed(2)} s; the rest is in-stage bookkeeping (database writes, serialisation)`,
    ],
    [
      'storageSecondsPerIterationLocal',
      o.storageSecondsPerIterationLocal.toFixed(3),
      '',
      'write + hash of artifacts per GRPO iteration, local store',
    ],
    [
      'storageSecondsPerIterationS3',
      o.storageSecondsPerIterationS3.toFixed(3),
      '',
      `same with S3 (upload + download + hash; ${process.env.OPERAFLOW_S3_ENDPOINT ?? 'AWS'})`,
    ],
    [
      'orchestrationOverheadFractionS3',
      o.orchestrationOverheadFractionS3.toFixed(3),
      '',
      'the overhead fraction with the S3 store',
    ],
  ];
}

/** Runs `fn` once to warm up, then `repeats` times; returns the median wall time in seconds. */
async function timed(repeats: number, fn: () => Promise<unknown>): Promise<number> {
  return (await compared(repeats, [fn]))[0]!;
}

/**
 * Times several variants of one job, interleaved (a, b, a, b, …) so that a change in machine load
 * between phases does not bias their ratio; each is warmed up once unless listed in `cold`
 * (its graphs are already compiled). Returns the median seconds of each.
 */
async function compared(repeats: number, fns: (() => Promise<unknown>)[], cold: number[] = []): Promise<number[]> {
  for (const [k, fn] of fns.entries()) if (!cold.includes(k)) await fn();
  const times = fns.map((): number[] => []);
  for (let r = 0; r < repeats; r++) {
    for (const [k, fn] of fns.entries()) {
      const t = performance.now();
      await fn();
      times[k]!.push((performance.now() - t) / 1000);
    }
  }
  return times.map(median);
}

/** MB fed to and returned by ONNX Runtime per session run while `fn` runs once (engine/ort.ts counts them). */
async function copiedPerRun(fn: () => Promise<unknown>): Promise<{ mb: number; runs: number }> {
  const before = engineStats();
  await fn();
  const after = engineStats();
  const runs = after.runs - before.runs;
  return { mb: (after.bytesIn - before.bytesIn + after.bytesOut - before.bytesOut) / runs / 2 ** 20, runs };
}

const randomTokens = (n: number, vocab: number, stream: number) =>
  Array.from({ length: n }, (_, k) => Math.floor(uniform(1, [stream], k) * vocab));

/** Matmul FLOPs of one forward over B rows of T tokens. */
export function forwardMatmulFlops(config: LlamaConfig, B: number, T: number): number {
  const { C, I, L, H, Hkv, D, V } = dims(config);
  const projections = 2 * (C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * I); // per token per layer
  const attention = 2 * 2 * H * D * T * T; // QKᵀ and PV, per sequence per layer
  return B * T * (L * projections + 2 * C * V) + B * L * attention;
}

/** fp32 n×n MatMuls through ORT, built with the engine's graph builder: the machine's practical peak. */
async function gemmJob(providers: string[], n = 2048): Promise<{ run: () => Promise<unknown>; flops: number }> {
  const g = new Graph('float32');
  g.output(g.matmul(g.input('a', 'float32', [n, n]), g.input('b', 'float32', [n, n])), 'c');
  const session = await Session.get(g.toBytes(), providers);
  const a = Float32Array.from({ length: n * n }, (_, k) => Math.sin(k));
  const b = Float32Array.from({ length: n * n }, (_, k) => Math.cos(k));
  // Several products per timed run: one alone (~0.1 s) would sample the machine's load for too short a moment.
  const perRun = 8;
  const run = async () => {
    for (let k = 0; k < perRun; k++) await session.run({ a: { data: a, dims: [n, n] }, b: { data: b, dims: [n, n] } });
  };
  return { run, flops: perRun * 2 * n ** 3 };
}

/** One SFT step (forward, backward, AdamW in one graph) of modelPresets.bench on B rows of T tokens. */
function trainJob(providers: string[], B = 8, T = 256): { run: () => Promise<unknown>; flops: number } {
  const config = modelPresets.bench;
  const trainer = new Trainer(new LlamaModel(config, initWeights(config, 1), { providers }));
  const batch = Array.from({ length: B }, (_, b) => {
    const tokens = randomTokens(T + 1, config.vocab_size, 100 + b); // T + 1 tokens give T predictions
    return { tokens, lossMask: tokens.map((_, t) => (t === 0 ? 0 : 1)) };
  });
  return { run: () => trainer.sftStep(batch, 1e-4), flops: 3 * forwardMatmulFlops(config, B, T) };
}

/**
 * OPERA's scoring: the mean log-prob of a reference after each of 8 prefixes of one context. The tree
 * packs the context once plus a copy of the reference per checkpoint into one forward. Baselines: one
 * forward per prefix, run one after another (each only as long as its prefix), and the same prefixes
 * as rows of one padded batch.
 */
async function treeScoring(repeats: number, model: LlamaModel) {
  const V = model.config.vocab_size;
  const prompt = randomTokens(32, V, 200);
  const response = randomTokens(512, V, 201);
  const context = [...prompt, ...response];
  const target = randomTokens(32, V, 202);
  const checkpoints = Array.from({ length: 8 }, (_, k) => prompt.length + 64 * (k + 1)); // …, full response
  const item = { context, checkpoints, target };
  const seqs = checkpoints.map((c) => ({ tokens: [...context.slice(0, c), ...target], start: c }));
  const meanOf = (lp: number[]) => lp.reduce((a, b) => a + b, 0) / lp.length;
  let tree: number[] = [];
  let separate: number[] = [];
  let batched: number[] = [];
  const [treeSeconds, separateSeconds, batchedSeconds] = (await compared(repeats, [
    async () => {
      [tree] = (await model.scoreCheckpoints([item])) as [number[]];
    },
    async () => {
      separate = [];
      for (const seq of seqs) separate.push(meanOf((await model.tokenLogps([seq]))[0]!));
    },
    async () => {
      batched = (await model.tokenLogps(seqs, seqs.length)).map(meanOf);
    },
  ])) as [number, number, number];
  const maxAbsDiff = Math.max(...tree.map((v, k) => Math.max(Math.abs(v - separate[k]!), Math.abs(v - batched[k]!))));
  // The ceiling on the speedup if both sides ran at the same FLOP rate: the shared context is computed
  // once by the tree but once per prefix by the baseline.
  const treeTokens = context.length + checkpoints.length * (target.length - 1);
  const flopRatio =
    seqs.reduce((sum, q) => sum + forwardMatmulFlops(model.config, 1, q.tokens.length - 1), 0) /
    forwardMatmulFlops(model.config, 1, treeTokens);
  return {
    speedup: separateSeconds / treeSeconds,
    speedupVsBatched: batchedSeconds / treeSeconds,
    maxAbsDiff,
    treeSeconds,
    separateSeconds,
    batchedSeconds,
    flopRatio,
  };
}

/** Feeds a fixed continuation token by token with the KV cache, or recomputing the whole prefix each time. */
async function kvDecode(
  repeats: number,
  model: LlamaModel,
  newTokens: number,
  B = 1,
): Promise<{ speedup: number; cacheSeconds: number; recomputeSeconds: number; copiedMB: number }> {
  const V = model.config.vocab_size;
  const prompts = Array.from({ length: B }, (_, b) => randomTokens(32, V, 300 + b));
  const continuations = Array.from({ length: B }, (_, b) => randomTokens(newTokens, V, 400 + b));
  const P0 = prompts[0]!.length;
  const withCache = async () => {
    let { cache } = await model.forward({
      tokens: prompts,
      positions: prompts.map((p) => p.map((_, k) => k)),
      attnBias: causalBias(
        prompts.map(() => P0),
        P0,
      ),
    });
    for (let t = 0; t < newTokens - 1; t++) {
      ({ cache } = await model.forward({
        tokens: continuations.map((c) => [c[t]!]),
        positions: prompts.map(() => [P0 + t]),
        attnBias: new Float32Array(B * (cache.length + 1)),
        past: cache,
      }));
    }
  };
  const recompute = async () => {
    for (let t = 0; t < newTokens; t++) {
      const rows = prompts.map((p, b) => [...p, ...continuations[b]!.slice(0, t)]);
      const S = rows[0]!.length;
      await model.forward({
        tokens: rows,
        positions: rows.map((r) => r.map((_, k) => k)),
        attnBias: causalBias(
          rows.map(() => S),
          S,
        ),
      });
    }
  };
  // Recompute needs no warm-up: the cached run's prefill already compiled the no-cache graph.
  const [cacheSeconds, recomputeSeconds] = (await compared(repeats, [withCache, recompute], [1])) as [number, number];
  const copiedMB = (await copiedPerRun(withCache)).mb;
  return { speedup: recomputeSeconds / cacheSeconds, cacheSeconds, recomputeSeconds, copiedMB };
}

async function sampling(repeats: number, model: LlamaModel, maxNewTokens: number, B = 16): Promise<number> {
  const byte = new ByteTokenizer();
  // EOS disabled so that every row generates maxNewTokens and each run does the same work.
  const tok: Tokenizer = {
    ...byte,
    specialIds: byte.specialIds,
    eosId: -1,
    encode: (s) => byte.encode(s),
    decode: (ids) => byte.decode(ids),
  };
  const requests = Array.from({ length: B }, (_, k) => ({
    prompt: randomTokens(32, byte.vocabSize, 500 + k),
    key: [0, k, 0],
  }));
  const seconds = await timed(repeats, () =>
    sample(model, tok, requests, { temperature: 1, topK: 0, topP: 1, maxNewTokens, seed: 1, batchSize: B }),
  );
  return (B * maxNewTokens) / seconds;
}

interface RealShape {
  qwen3ShapeLoraSftStepSeconds: number;
  qwen3ShapeLoraSftPeakRssGiB: number;
  qwen3ShapeGrpoIterationSeconds: number;
  qwen3ShapeGrpoPeakRssGiB: number;
}

/** The real-model figures (scripts/bench-qwen3.ts), each in a process of its own: a memory peak stays its own. */
async function realShape(log: (s: string) => void, providers: string[]): Promise<RealShape> {
  const run = (mode: string) =>
    JSON.parse(
      execFileSync(
        process.execPath,
        ['--import', 'tsx', join(__dirname, 'bench-qwen3.ts'), mode, providers.join(',')],
        {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      )
        .trim()
        .split('\n')
        .pop()!,
    ) as Partial<RealShape>;
  log('  Qwen3-0.6B-shape LoRA SFT step and GRPO iteration (several minutes)...');
  return { ...run('sft'), ...run('grpo') } as RealShape;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const repeats = args.quick ? 2 : 5;
  const newTokens = args.quick ? 64 : 256;
  const log = (s: string) => {
    if (!args.json) console.log(s);
    else console.error(s);
  };
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  log(
    `bench on ${availableParallelism()} × ${cpu}, node ${process.version}, providers ${args.providers.join(',')}${args.quick ? ' (quick)' : ''}; medians of ${repeats} runs`,
  );
  const orchestrationRepeats = args.quick ? 1 : 3;
  if (args.orchestrationOnly) {
    const o = await orchestrationBench(log, {
      quick: args.quick,
      repeats: orchestrationRepeats,
      providers: args.providers,
    });
    report(orchestrationRows(o), { machine: `${availableParallelism()} × ${cpu}`, quick: args.quick, ...o }, args.json);
    return;
  }

  // Interleaved, so that the peak fraction compares the two under the same machine load.
  const gemmJ = await gemmJob(args.providers);
  const trainJ = trainJob(args.providers);
  const [gemmSeconds, trainSeconds] = (await compared(args.quick ? 2 : 5, [gemmJ.run, trainJ.run])) as [number, number];
  const gemm = gemmJ.flops / gemmSeconds / 1e9;
  const train = { gflops: trainJ.flops / trainSeconds / 1e9, seconds: trainSeconds };
  log(`  gemm ${gemm.toFixed(1)} GFLOP/s, train step ${train.seconds.toFixed(2)} s`);
  const trainCopy = await copiedPerRun(trainJ.run);
  const model = new LlamaModel(modelPresets.bench, initWeights(modelPresets.bench, 2), { providers: args.providers });
  const tree = await treeScoring(repeats, model);
  log(`  tree scoring done: ${tree.speedup.toFixed(2)}×`);
  const kv = await kvDecode(args.quick ? 2 : 3, model, newTokens);
  log(`  kv decode done: ${kv.speedup.toFixed(2)}×`);
  const tps = await sampling(args.quick ? 1 : 3, model, args.quick ? 32 : 128);
  log(`  sampling done: ${tps.toFixed(1)} tokens/s`);

  const real = args.quick ? undefined : await realShape(log, args.providers);
  const orchestration = await orchestrationBench(log, {
    quick: args.quick,
    repeats: orchestrationRepeats,
    providers: args.providers,
  });

  const result = {
    machine: `${availableParallelism()} × ${cpu}`,
    providers: args.providers.join(','),
    quick: args.quick,
    gemmGflops: gemm,
    trainStepGflops: train.gflops,
    trainStepPeakFraction: train.gflops / gemm,
    trainStepSeconds: train.seconds,
    trainStepCopiedMB: trainCopy.mb,
    decodeStepCopiedMB: kv.copiedMB,
    treeScoringSpeedup: tree.speedup,
    treeScoringMaxAbsDiff: tree.maxAbsDiff,
    treeScoringSeconds: tree.treeSeconds,
    treeScoringSpeedupVsBatched: tree.speedupVsBatched,
    treeScoringFlopRatio: tree.flopRatio,
    kvDecodeSpeedup: kv.speedup,
    kvDecodeTokensPerSec: newTokens / kv.cacheSeconds,
    sampleTokensPerSec: tps,
    ...real,
    ...orchestration,
  };
  const rows: Row[] = [
    ['gemmGflops', gemm.toFixed(1), '', 'fp32 2048×2048 MatMul through ORT'],
    [
      'trainStepGflops',
      train.gflops.toFixed(1),
      '',
      `modelPresets.bench SFT step, batch 8 × 256, ${train.seconds.toFixed(2)} s/step`,
    ],
    ['trainStepPeakFraction', result.trainStepPeakFraction.toFixed(3), '≥ 0.6', 'trainStepGflops / gemmGflops'],
    [
      'trainStepCopiedMB',
      trainCopy.mb.toFixed(1),
      '',
      `fed to + returned by one SFT step (${trainCopy.runs} session run(s)): weights, AdamW moments and batch in, new ones out; host↔device copies on a GPU`,
    ],
    [
      'decodeStepCopiedMB',
      kv.copiedMB.toFixed(2),
      '',
      `fed to + returned per forward of that KV-cached decode (mean over its ${newTokens} forwards, prefill included): the cache goes in and out each step; weights stay in the session`,
    ],
    [
      'treeScoringSpeedup',
      tree.speedup.toFixed(2),
      '≥ 4',
      `8 checkpoints, 512-token response, 32-token reference: ${tree.treeSeconds.toFixed(3)} s vs ${tree.separateSeconds.toFixed(3)} s for one forward per prefix`,
    ],
    [
      'treeScoringSpeedupVsBatched',
      tree.speedupVsBatched.toFixed(2),
      '',
      `same, baseline = the 8 prefixes as one padded batch: ${tree.batchedSeconds.toFixed(3)} s`,
    ],
    [
      'treeScoringFlopRatio',
      tree.flopRatio.toFixed(2),
      '',
      'matmul FLOPs of one forward per prefix / of the tree: the speedup at equal FLOP rates',
    ],
    ['treeScoringMaxAbsDiff', tree.maxAbsDiff.toExponential(2), '≤ 1e-4', 'mean log p, tree vs both baselines'],
    [
      'kvDecodeSpeedup',
      kv.speedup.toFixed(2),
      '≥ 10',
      `${newTokens} new tokens after a 32-token prompt, batch 1: ${kv.cacheSeconds.toFixed(2)} s vs ${kv.recomputeSeconds.toFixed(2)} s`,
    ],
    [
      'sampleTokensPerSec',
      tps.toFixed(1),
      '',
      `sample(), batch 16, ${args.quick ? 32 : 128} new tokens, modelPresets.bench`,
    ],
  ];
  if (real)
    rows.push(
      [
        'qwen3ShapeLoraSftStepSeconds',
        real.qwen3ShapeLoraSftStepSeconds.toFixed(1),
        '',
        "LoRA rank 16 SFT step at Qwen3-0.6B's shape (random weights), batch 4 × 512",
      ],
      ['qwen3ShapeLoraSftPeakRssGiB', real.qwen3ShapeLoraSftPeakRssGiB.toFixed(1), '≤ 24', 'peak RSS of that process'],
      [
        'qwen3ShapeGrpoIterationSeconds',
        real.qwen3ShapeGrpoIterationSeconds.toFixed(1),
        '',
        'same model: 8 prompts × 4 rollouts × 128 tokens sampled, OPERA scoring, log-probs, update in mini-batches of 8 (cold)',
      ],
      ['qwen3ShapeGrpoPeakRssGiB', real.qwen3ShapeGrpoPeakRssGiB.toFixed(1), '≤ 24', 'peak RSS of that process'],
    );
  rows.push(...orchestrationRows(orchestration));
  report(rows, result, args.json);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
