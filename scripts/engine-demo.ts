/**
 * `npm run engine:demo`: the engine end to end, with nothing downloaded. It writes a synthetic corpus
 * in code, trains `modelPresets.demo` from scratch by SFT, samples from it, saves a checkpoint under
 * .operaflow/demo/ and reloads it, checking that the reloaded model gives identical log-probs.
 * Exits non-zero if the loss does not fall or the reload differs, so it doubles as a smoke test.
 */
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { loadCheckpoint, saveCheckpoint } from '../engine/checkpoint';
import { modelPresets } from '../engine/config';
import { LlamaModel, initWeights } from '../engine/model';
import { uniform } from '../engine/rng';
import { sample } from '../engine/sampler';
import { ByteTokenizer } from '../engine/tokenizer';
import { Trainer } from '../engine/trainer';

const SEED = 7;
const STEPS = Number(process.env.DEMO_STEPS ?? 200);
const BATCH = 16;
const PEAK_LR = 3e-3;
const WARMUP = 20;
const OUT_DIR = join('.operaflow', 'demo');

// Each animal has one fixed trait (a fact to memorise); colour, verb and place vary (to copy or to guess).
const ANIMALS: Record<string, { plural: string; trait: string }> = {
  fox: { plural: 'Foxes', trait: 'clever' },
  cat: { plural: 'Cats', trait: 'curious' },
  dog: { plural: 'Dogs', trait: 'loyal' },
  owl: { plural: 'Owls', trait: 'wise' },
  frog: { plural: 'Frogs', trait: 'green' },
  bear: { plural: 'Bears', trait: 'strong' },
  horse: { plural: 'Horses', trait: 'fast' },
  mouse: { plural: 'Mice', trait: 'small' },
};
const COLORS = ['red', 'blue', 'white', 'black', 'brown', 'golden'];
const VERBS = ['runs', 'sleeps', 'jumps', 'hides', 'sings'];
const PLACES = ['in the forest', 'by the river', 'under a tree', 'on the hill'];

const pick = <T>(xs: readonly T[], u: number): T => xs[Math.floor(u * xs.length)]!;

/** One example: the prompt, then a think block with the memorised fact, then an answer copying the prompt. */
function example(k: number): { prompt: string; response: string } {
  const animal = pick(Object.keys(ANIMALS), uniform(SEED, [0, k], 0));
  const color = pick(COLORS, uniform(SEED, [0, k], 1));
  const prompt = `Describe a ${color} ${animal}.`;
  const response = `<think>${ANIMALS[animal]!.plural} are ${ANIMALS[animal]!.trait}.</think>The ${color} ${animal} ${pick(VERBS, uniform(SEED, [0, k], 2))} ${pick(PLACES, uniform(SEED, [0, k], 3))}.`;
  return { prompt, response };
}

/** Cosine decay to 10% of the peak after a linear warm-up. */
function learningRate(step: number): number {
  if (step < WARMUP) return (PEAK_LR * (step + 1)) / WARMUP;
  const progress = (step - WARMUP) / Math.max(1, STEPS - WARMUP);
  return PEAK_LR * (0.1 + 0.45 * (1 + Math.cos(Math.PI * progress)));
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const tok = new ByteTokenizer();
  const config = modelPresets.demo;
  const model = new LlamaModel(config, initWeights(config, SEED));
  const trainer = new Trainer(model, { weightDecay: 0.01 });
  const params = [...model.weights.values()].reduce((n, w) => n + w.length, 0);
  const encodeExample = (k: number) => {
    const { prompt, response } = example(k);
    return [tok.bosId, ...tok.encode(prompt + response), tok.eosId];
  };
  console.log(
    `engine demo: modelPresets.demo (${config.num_hidden_layers} layers, hidden ${config.hidden_size}, ${(params / 1e6).toFixed(2)}M parameters), byte tokenizer`,
  );
  console.log(`corpus: synthetic, generated in code, e.g. ${JSON.stringify(example(0).prompt + example(0).response)}`);
  console.log(
    `training: ${STEPS} SFT steps × ${BATCH} examples, AdamW, peak lr ${PEAK_LR}, warm-up ${WARMUP}, cosine decay\n`,
  );

  const losses: number[] = [];
  const bar = new cliProgress.SingleBar(
    { format: 'train |{bar}| {value}/{total} steps | loss {loss} | {tps} tok/s | eta {eta}s', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(STEPS, 0, { loss: '-', tps: '-' });
  const started = performance.now();
  let tokens = 0;
  const checkpoints: string[] = [];
  for (let step = 0; step < STEPS; step++) {
    const batch = Array.from({ length: BATCH }, (_, b) => {
      const ids = encodeExample(step * BATCH + b + 1000);
      return { tokens: ids, lossMask: ids.map((_, t) => (t === 0 ? 0 : 1)) };
    });
    const result = await trainer.sftStep(batch, learningRate(step));
    if (!Number.isFinite(result.loss)) throw new Error(`training diverged: loss ${result.loss} at step ${step}`);
    losses.push(result.loss);
    tokens += result.tokens;
    if (step % 40 === 0 || step === STEPS - 1)
      checkpoints.push(
        `  step ${String(step).padStart(4)}  loss ${result.loss.toFixed(3)}  grad-norm ${result.gradNorm.toFixed(2)}`,
      );
    bar.update(step + 1, {
      loss: result.loss.toFixed(3),
      tps: Math.round(tokens / ((performance.now() - started) / 1000)),
    });
  }
  bar.stop();
  const seconds = (performance.now() - started) / 1000;
  console.log(checkpoints.join('\n'));
  const window = Math.min(10, Math.floor(STEPS / 2));
  const first = mean(losses.slice(0, window));
  const last = mean(losses.slice(-window));
  console.log(
    `\nloss fell from ${first.toFixed(3)} to ${last.toFixed(3)} (mean of the first and last ${window} steps; ln(264) = ${Math.log(264).toFixed(3)} is uniform), ${seconds.toFixed(1)} s, ${Math.round(tokens / seconds)} tokens/s`,
  );
  if (!(last < 0.5 * first))
    throw new Error(`the loss did not fall enough: first ${first.toFixed(3)}, last ${last.toFixed(3)}`);

  const prompts = [
    'Describe a golden owl.',
    'Describe a blue fox.',
    'Describe a white frog.',
    'Describe a black horse.',
  ];
  const requests = prompts.map((p, k) => ({ prompt: [tok.bosId, ...tok.encode(p)], key: [0, k, 0] }));
  const samples = await sample(model, tok, requests, {
    temperature: 0.7,
    topK: 0,
    topP: 0.95,
    maxNewTokens: 80,
    seed: SEED,
  });
  console.log('\nsamples (temperature 0.7, top-p 0.95):');
  samples.forEach((s, k) =>
    console.log(`  ${prompts[k]} → ${JSON.stringify(s.text)} [${s.finish}, mean log p ${mean(s.logps).toFixed(3)}]`),
  );

  const files = await saveCheckpoint(OUT_DIR, {
    config,
    weights: model.weights,
    optimizer: trainer.state(),
    extra: { step: STEPS, seed: SEED, finalLoss: last },
  });
  console.log(`\ncheckpoint saved to ${OUT_DIR}/:`);
  for (const f of files)
    console.log(
      `  ${f.path.slice(OUT_DIR.length + 1).padEnd(22)} ${String(f.bytes).padStart(9)} bytes  sha256 ${f.sha256.slice(0, 16)}…`,
    );

  const loaded = await loadCheckpoint(OUT_DIR, config);
  const reloaded = new LlamaModel(loaded.config, loaded.weights);
  const heldOut = Array.from({ length: 4 }, (_, k) => ({ tokens: encodeExample(k), start: 1 }));
  const before = await model.tokenLogps(heldOut);
  const after = await reloaded.tokenLogps(heldOut);
  let maxDiff = 0;
  let count = 0;
  before.forEach((row, r) =>
    row.forEach((lp, t) => {
      maxDiff = Math.max(maxDiff, Math.abs(lp - after[r]![t]!));
      count++;
    }),
  );
  console.log(
    `reloaded: optimizer step ${loaded.optimizer?.step}, ${count} held-out token log-probs, max |difference| = ${maxDiff} (mean log p ${mean(before.flat()).toFixed(3)})`,
  );
  if (maxDiff !== 0) throw new Error(`the reloaded checkpoint gives different log-probs (max difference ${maxDiff})`);
  console.log('identical log-probs after reload: yes');
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
