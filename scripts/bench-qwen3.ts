/**
 * The real-model figures of `npm run bench` (run by scripts/bench.ts in a child process of its own, so its
 * ~20 GiB peak is not added to the rest): one LoRA (rank 16) SFT step at Qwen3-0.6B's exact shape —
 * hidden 1024, 28 layers, 16 heads over 8 kv heads, head_dim 128, intermediate 3072, vocab 151936, tied
 * (random weights) — on a batch of 4 × 512 tokens. Prints one JSON line: the median step time after a
 * warm-up step (which builds the graph) and the process's peak RSS (VmHWM).
 */
import { readFileSync } from 'node:fs';
import { llamaConfigSchema } from '../engine/config';
import { LlamaModel } from '../engine/model';
import { Trainer } from '../engine/trainer';
import { initWeights } from '../engine/weights';

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

async function main(): Promise<void> {
  const steps = Number(process.argv[2] ?? 2);
  const [B, T] = [4, 512];
  const config = llamaConfigSchema.parse({ ...QWEN3_0_6B_SHAPE, lora: { rank: 16, alpha: 32 } });
  const model = new LlamaModel(config, initWeights(config, 1));
  const trainer = new Trainer(model, {});
  const rows = Array.from({ length: B }, (_, b) =>
    Array.from({ length: T }, (_, k) => (k * 7919 + b * 104729) % 151936),
  );
  const batch = rows.map((tokens) => ({ tokens, lossMask: tokens.map(() => 1) }));
  await trainer.sftStep(batch, 1e-4); // warm-up: builds and compiles the graph
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await trainer.sftStep(batch, 1e-4);
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      qwen3ShapeLoraSftStepSeconds: times[times.length >> 1],
      qwen3ShapeLoraSftPeakRssGiB: peakRssGiB(),
    }),
  );
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
