/**
 * The real-model figures of `npm run bench`, each run by scripts/bench.ts in a child process of its own
 * (so a ~20 GiB peak is not added to the rest), at Qwen3-0.6B's exact shape — hidden 1024, 28 layers, 16
 * heads over 8 kv heads, head_dim 128, intermediate 3072, vocab 151936, tied (random weights) — with a
 * rank-16 LoRA adapter:
 *   `sft`:  one SFT step on 4 × 512 tokens (median of 2 after a warm-up step that builds the graph);
 *   `grpo`: one GRPO iteration as the stages run it: 8 prompts × 4 rollouts × 128 sampled tokens, OPERA
 *           checkpoint scoring of a 32-token reference, old and reference log-probs, and the update in
 *           mini-batches of 8 sequences (graphs built on the way: a cold iteration).
 * Prints one JSON line with the figure and the process's peak RSS (VmHWM).
 *   node --import tsx scripts/bench-qwen3.ts sft|grpo [providers, e.g. cuda,cpu]
 */
import { readFileSync } from 'node:fs';
import { llamaConfigSchema } from '../engine/config';
import { LlamaModel } from '../engine/model';
import { sample } from '../engine/sampler';
import type { Tokenizer } from '../engine/tokenizer';
import { Trainer } from '../engine/trainer';
import { initWeights } from '../engine/weights';
import { grpoBatch, grpoObjective, type GrpoSequence } from '../opera/grpo-graph';

export const QWEN3_0_6B_SHAPE = {
  model_type: 'qwen3',
  hidden_size: 1024,
  num_hidden_layers: 28,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  head_dim: 128,
  intermediate_size: 3072,
  vocab_size: 151936,
  tie_word_embeddings: true,
  max_position_embeddings: 40960,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
} as const;

const peakRssGiB = () =>
  Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) / 2 ** 20;

/** The execution providers (argv[3], `cpu` by default): `npm run bench -- --providers cuda` passes its own. */
const providers = (process.argv[3] ?? 'cpu').split(',');
const config = llamaConfigSchema.parse({ ...QWEN3_0_6B_SHAPE, lora: { rank: 16, alpha: 32 } });
const tokens = (n: number, seed: number) => Array.from({ length: n }, (_, k) => (k * 7919 + seed * 104729) % 151936);

async function sftStep(steps: number): Promise<Record<string, number>> {
  const trainer = new Trainer(new LlamaModel(config, initWeights(config, 1), { providers }), {});
  const batch = [0, 1, 2, 3].map((b) => tokens(512, b)).map((t) => ({ tokens: t, lossMask: t.map(() => 1) }));
  await trainer.sftStep(batch, 1e-4); // warm-up: builds and compiles the graph
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await trainer.sftStep(batch, 1e-4);
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return { qwen3ShapeLoraSftStepSeconds: times[times.length >> 1]!, qwen3ShapeLoraSftPeakRssGiB: peakRssGiB() };
}

/** A tokenizer over the model's ids that never stops early (every rollout samples all 128 tokens). */
const ids: Tokenizer = {
  vocabSize: 151936,
  bosId: 0,
  eosId: -1,
  padId: 0,
  specialIds: {},
  encode: () => [],
  decode: (t) => t.join(' '),
};

async function grpoIteration(): Promise<Record<string, number>> {
  const model = new LlamaModel(config, initWeights(config, 1), { providers });
  const t0 = performance.now();
  const prompts = Array.from({ length: 8 }, (_, p) => tokens(64, 100 + p));
  const rollouts = await sample(
    model,
    ids,
    prompts.flatMap((prompt, p) => [0, 1, 2, 3].map((j) => ({ prompt, key: [1, p, j] }))),
    { temperature: 1, topK: 0, topP: 1, maxNewTokens: 128, seed: 1, batchSize: 32 },
  );
  const seqs = rollouts.map((r, k) => ({ tokens: [...prompts[k >> 2]!, ...r.tokens], start: 64 }));
  // OPERA scoring: the reference after the prompt and after every 32 response tokens, in one tree each.
  const reference = tokens(32, 999);
  await model.scoreCheckpoints(
    seqs.map((s) => ({ context: s.tokens, checkpoints: [64, 96, 128, 160, 192], target: reference })),
  );
  const oldLogp = await model.tokenLogps(seqs);
  const refLogp = await model.tokenLogps(seqs); // the frozen reference is the policy before its first update
  const trainer = new Trainer(model, {});
  const batch: GrpoSequence[] = seqs.map((s, k) => ({
    tokens: s.tokens,
    responseStart: 64,
    advantage: (k % 4) - 1.5,
    oldLogp: oldLogp[k]!,
    refLogp: refLogp[k]!,
  }));
  for (let m = 0; m < batch.length; m += 8) await trainer.step(grpoObjective(), grpoBatch(batch.slice(m, m + 8)), 1e-5);
  return {
    qwen3ShapeGrpoIterationSeconds: (performance.now() - t0) / 1000,
    qwen3ShapeGrpoPeakRssGiB: peakRssGiB(),
  };
}

async function main(): Promise<void> {
  const mode = process.argv[2] ?? 'sft';
  const out = mode === 'grpo' ? await grpoIteration() : await sftStep(2);
  console.log(JSON.stringify(out));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
