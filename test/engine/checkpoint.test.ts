import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeSafetensors, encodeSafetensors, loadCheckpoint, saveCheckpoint } from '../../engine/checkpoint';
import { modelPresets, type LlamaConfig } from '../../engine/config';
import { initWeights, parameterShapes, type Weights } from '../../engine/model';

describe('safetensors codec', () => {
  it('writes the documented layout: u64 header length, space-padded JSON, raw little-endian F32', () => {
    const buf = encodeSafetensors(
      new Map([
        ['b', { shape: [1], data: new Float32Array([0.5]) }],
        ['a', { shape: [2], data: new Float32Array([1, -2]) }],
      ]),
      { step: '7' },
    );
    const headerLen = Number(buf.readBigUInt64LE(0));
    expect((8 + headerLen) % 8).toBe(0);
    expect(JSON.parse(buf.subarray(8, 8 + headerLen).toString())).toEqual({
      __metadata__: { step: '7' },
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    });
    const data = buf.subarray(8 + headerLen);
    expect([data.readFloatLE(0), data.readFloatLE(4), data.readFloatLE(8)]).toEqual([1, -2, 0.5]);
    expect(buf.length).toBe(8 + headerLen + 12);
  });

  it('round-trips tensors and metadata bit-exactly, including NaN payloads and -0', () => {
    const data = new Float32Array([0, -0, NaN, Infinity, 1e-40, 3.4e38, -1.5]);
    const { tensors, metadata } = decodeSafetensors(
      encodeSafetensors(new Map([['x.w', { shape: [7, 1], data }]]), { k: 'v' }),
    );
    expect(metadata).toEqual({ k: 'v' });
    const back = tensors.get('x.w')!;
    expect(back.shape).toEqual([7, 1]);
    expect(Buffer.from(back.data.buffer)).toEqual(Buffer.from(data.buffer));
  });

  it('reads BF16, F16 and F64 tensors written by other tools, as F32', () => {
    const header = JSON.stringify({
      bf: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] },
      h: { dtype: 'F16', shape: [2], data_offsets: [4, 8] },
      d: { dtype: 'F64', shape: [1], data_offsets: [8, 16] },
    });
    const body = Buffer.alloc(16);
    body.writeUInt16LE(0x3f80, 0); // bf16 1.0
    body.writeUInt16LE(0xc0a0, 2); // bf16 -5.0
    body.writeUInt16LE(0xc100, 4); // f16 -2.5
    body.writeUInt16LE(0x0001, 6); // f16 smallest subnormal, 2^-24
    body.writeDoubleLE(0.25, 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    const { tensors } = decodeSafetensors(Buffer.concat([len, Buffer.from(header), body]));
    expect([...tensors.get('bf')!.data]).toEqual([1, -5]);
    expect([...tensors.get('h')!.data]).toEqual([-2.5, 2 ** -24]);
    expect([...tensors.get('d')!.data]).toEqual([0.25]);
  });

  it('says what is wrong with a corrupt file', () => {
    const good = encodeSafetensors(new Map([['w', { shape: [4], data: new Float32Array(4) }]]));
    expect(() => decodeSafetensors(good.subarray(0, 5))).toThrow('5 bytes is too short');
    expect(() => decodeSafetensors(good.subarray(0, good.length - 4))).toThrow(
      'tensor "w" (F32 [4]) needs 16 bytes but data_offsets [0, 16] give 16 within 12 data bytes',
    );
    const huge = Buffer.from(good);
    huge.writeBigUInt64LE(10n ** 12n, 0);
    expect(() => decodeSafetensors(huge)).toThrow('header length 1000000000000 does not fit');
    const header = JSON.stringify({ w: { dtype: 'I8', shape: [1], data_offsets: [0, 1] } });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    expect(() => decodeSafetensors(Buffer.concat([len, Buffer.from(header), Buffer.alloc(1)]))).toThrow(
      'tensor "w" has dtype I8; supported: F32, F16, BF16, F64',
    );
    expect(() => encodeSafetensors(new Map([['w', { shape: [2, 2], data: new Float32Array(3) }]]))).toThrow(
      'tensor "w" has shape [2, 2] (4 elements) but 3 values',
    );
  });
});

describe('saveCheckpoint / loadCheckpoint', () => {
  const config: LlamaConfig = modelPresets.tiny;
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ckpt-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const scaled = (w: Weights, k: number): Weights => new Map([...w].map(([n, d]) => [n, d.map((x) => x * k)]));

  it('round-trips weights, optimizer moments, step and trainer state exactly', async () => {
    const weights = initWeights(config, 1);
    const optimizer = { step: 12, m: scaled(weights, 0.1), v: scaled(weights, 0.01) };
    const extra = { ema: -1.25, dataPosition: 40, note: 'after iteration 3' };
    const files = await saveCheckpoint(dir, { config, weights, optimizer, extra });

    expect(files.map((f) => f.path.slice(dir.length + 1)).sort()).toEqual([
      'config.json',
      'model.safetensors',
      'optimizer.safetensors',
      'trainer_state.json',
    ]);
    for (const f of files) {
      const bytes = await readFile(f.path);
      expect(f.bytes).toBe(bytes.length);
      expect(f.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    }
    expect((await readdir(dir)).some((n) => n.includes('.tmp-'))).toBe(false);

    const loaded = await loadCheckpoint(dir, config);
    expect(loaded.config).toEqual(config);
    expect([...loaded.weights.keys()].sort()).toEqual([...parameterShapes(config).keys()].sort());
    for (const [name, data] of weights) expect(loaded.weights.get(name)).toEqual(data);
    expect(loaded.optimizer!.step).toBe(12);
    for (const [name, data] of optimizer.m) expect(loaded.optimizer!.m.get(name)).toEqual(data);
    for (const [name, data] of optimizer.v) expect(loaded.optimizer!.v.get(name)).toEqual(data);
    expect(loaded.extra).toEqual(extra);
  });

  it('writes an HF-style config.json and deterministic weight bytes', async () => {
    const weights = initWeights(config, 2);
    const first = await saveCheckpoint(dir, { config, weights });
    const json = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    expect(json.architectures).toEqual(['LlamaForCausalLM']);
    expect(json.model_type).toBe('llama');
    expect(json.hidden_size).toBe(config.hidden_size);
    expect(json.num_key_value_heads).toBe(config.num_key_value_heads);
    const again = await saveCheckpoint(dir, { config, weights });
    expect(again[0]!.sha256).toBe(first[0]!.sha256);
  });

  it('drops stale optimizer and trainer state when a later save has none', async () => {
    const weights = initWeights(config, 3);
    await saveCheckpoint(dir, { config, weights, optimizer: { step: 1, m: weights, v: weights }, extra: { a: 1 } });
    await saveCheckpoint(dir, { config, weights });
    const loaded = await loadCheckpoint(dir);
    expect(loaded.optimizer).toBeUndefined();
    expect(loaded.extra).toBeUndefined();
  });

  it('lists missing, unexpected and misshaped tensors with the file', async () => {
    const weights = initWeights(config, 4);
    await saveCheckpoint(dir, { config, weights });
    const shapes = parameterShapes(config);
    const tensors = new Map([...weights].map(([n, d]) => [n, { shape: shapes.get(n)!, data: d }]));
    tensors.delete('model.norm.weight');
    tensors.set('model.extra.weight', { shape: [1], data: new Float32Array(1) });
    const q = 'model.layers.0.self_attn.q_proj.weight';
    const [rows, cols] = shapes.get(q)!;
    tensors.set(q, { shape: [cols!, rows!, 1], data: tensors.get(q)!.data });
    await writeFile(join(dir, 'model.safetensors'), encodeSafetensors(tensors));
    const err = await loadCheckpoint(dir).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toContain(join(dir, 'model.safetensors'));
    expect(err).toContain('missing: model.norm.weight');
    expect(err).toContain('unexpected: model.extra.weight');
    expect(err).toContain(`${q}: expected [${rows}, ${cols}] got [${cols}, ${rows}, 1]`);
  });

  it('refuses a checkpoint whose config differs from the expected one, naming the field', async () => {
    await saveCheckpoint(dir, { config, weights: initWeights(config, 5) });
    const other = { ...config, num_hidden_layers: config.num_hidden_layers + 1 };
    await expect(loadCheckpoint(dir, other)).rejects.toThrow(
      `num_hidden_layers: expected ${config.num_hidden_layers + 1} got ${config.num_hidden_layers}`,
    );
  });

  it('loads a foreign HF config.json with extra fields, and rejects settings the engine lacks', async () => {
    await saveCheckpoint(dir, { config, weights: initWeights(config, 6) });
    const path = join(dir, 'config.json');
    const json = JSON.parse(await readFile(path, 'utf8'));
    await writeFile(
      path,
      JSON.stringify({ ...json, bos_token_id: 1, eos_token_id: 2, transformers_version: '4.50.0', pretraining_tp: 1 }),
    );
    expect((await loadCheckpoint(dir)).config).toEqual(config);
    await writeFile(path, JSON.stringify({ ...json, rope_scaling: { rope_type: 'llama3', factor: 8 } }));
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      `${path}: invalid config: rope_scaling.low_freq_factor: Invalid input: expected number`,
    );
    await writeFile(path, JSON.stringify({ ...json, hidden_size: 'big' }));
    await expect(loadCheckpoint(dir)).rejects.toThrow(`${path}: invalid config: hidden_size:`);
  });

  // Catches: transformers 5's `rope_parameters` ignored (theta falling back to 10000), a rope type or a
  // setting the engine does not implement being dropped instead of refused.
  it('reads RoPE from both config.json layouts and refuses what it does not implement, naming it', async () => {
    await saveCheckpoint(dir, { config, weights: initWeights(config, 6) });
    const path = join(dir, 'config.json');
    const { rope_theta: _t, rope_scaling: _s, ...json } = JSON.parse(await readFile(path, 'utf8'));
    const load = async (extra: Record<string, unknown>) => {
      await writeFile(path, JSON.stringify({ ...json, ...extra }));
      return (await loadCheckpoint(dir)).config;
    };
    const llama3 = { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };
    expect(await load({ rope_parameters: { rope_theta: 500000, rope_type: 'default' } })).toMatchObject({
      rope_theta: 500000,
    });
    expect(
      (await load({ rope_parameters: { rope_theta: 500000, rope_type: 'default' } })).rope_scaling,
    ).toBeUndefined();
    expect(await load({ rope_parameters: { rope_theta: 500000, rope_type: 'llama3', ...llama3 } })).toMatchObject({
      rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', ...llama3 },
    });
    // 4.x layout, with the older `type` key.
    expect(await load({ rope_theta: 250000, rope_scaling: { type: 'linear', factor: 2 } })).toMatchObject({
      rope_theta: 250000,
      rope_scaling: { rope_type: 'linear', factor: 2 },
    });
    // head_dim takes effect: twice the default head size doubles the projections this checkpoint lacks.
    expect(await load({ head_dim: 8 })).toMatchObject({ head_dim: 8 });
    await expect(load({ head_dim: 16 })).rejects.toThrow('self_attn.q_proj.weight: expected [64, 32] got [32, 32]');
    await expect(load({ rope_parameters: { rope_theta: 1e4, rope_type: 'longrope' } })).rejects.toThrow(
      `${path}: unsupported settings: rope type "longrope" (supported: default, linear, dynamic, llama3, yarn)`,
    );
    await expect(load({ rope_scaling: { rope_type: 'linear', factor: 2, extra_knob: 1 } })).rejects.toThrow(
      `${path}: invalid config: rope_scaling: Unrecognized key: "extra_knob"`,
    );
    await expect(load({ partial_rotary_factor: 0.5 })).rejects.toThrow('partial_rotary_factor 0.5');
    await expect(load({ pretraining_tp: 2 })).rejects.toThrow('pretraining_tp 2 (only 1)');
    await expect(load({ hidden_act: 'gelu' })).rejects.toThrow('hidden_act "gelu" (only silu)');
    await expect(load({ model_type: 'gpt2' })).rejects.toThrow(
      'model_type "gpt2" (supported: llama, mistral, qwen2, qwen3)',
    );
  });

  it('accepts an lm_head.weight that some exporters write for a tied model, and drops it', async () => {
    const tied: LlamaConfig = { ...config, tie_word_embeddings: true };
    const weights = initWeights(tied, 8);
    await saveCheckpoint(dir, { config: tied, weights });
    const shapes = parameterShapes(tied);
    const tensors = new Map([...weights].map(([n, d]) => [n, { shape: shapes.get(n)!, data: d }]));
    tensors.set('lm_head.weight', tensors.get('model.embed_tokens.weight')!);
    await writeFile(join(dir, 'model.safetensors'), encodeSafetensors(tensors));
    const loaded = await loadCheckpoint(dir, tied);
    expect(loaded.weights.has('lm_head.weight')).toBe(false);
    expect(loaded.weights.size).toBe(shapes.size);
  });

  it('loads weights sharded the way transformers saves large models', async () => {
    const weights = initWeights(config, 9);
    await saveCheckpoint(dir, { config, weights });
    await rm(join(dir, 'model.safetensors'));
    const shapes = parameterShapes(config);
    const names = [...shapes.keys()];
    const half = Math.ceil(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [k, shard] of shards.entries()) {
      const file = `model-0000${k + 1}-of-00002.safetensors`;
      await writeFile(
        join(dir, file),
        encodeSafetensors(new Map(shard.map((n) => [n, { shape: shapes.get(n)!, data: weights.get(n)! }]))),
      );
      for (const n of shard) weightMap[n] = file;
    }
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const loaded = await loadCheckpoint(dir, config);
    for (const [name, data] of weights) expect(loaded.weights.get(name)).toEqual(data);
    await rm(join(dir, 'model-00002-of-00002.safetensors'));
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      `cannot read weight shard ${join(dir, 'model-00002-of-00002.safetensors')}`,
    );
  });

  // Catches: optimizer moments not validated on load (a resumed run would train with wrong or partial AdamW state).
  it('refuses an optimizer file whose moments or step do not fit the config, naming each problem', async () => {
    const weights = initWeights(config, 10);
    await saveCheckpoint(dir, { config, weights, optimizer: { step: 4, m: weights, v: weights } });
    const shapes = parameterShapes(config);
    const moments = (prefix: string) =>
      new Map([...weights].map(([n, d]) => [`${prefix}${n}`, { shape: shapes.get(n)!, data: d }]));
    const path = join(dir, 'optimizer.safetensors');
    const q = 'model.layers.0.self_attn.q_proj.weight';
    const m = moments('m.');
    const v = moments('v.');
    v.delete('v.model.norm.weight');
    m.set(`m.${q}`, { shape: [1, m.get(`m.${q}`)!.data.length], data: m.get(`m.${q}`)!.data });
    await writeFile(
      path,
      encodeSafetensors(new Map([...m, ...v, ['w.stray', { shape: [1], data: new Float32Array(1) }]]), { step: '4' }),
    );
    const err = await loadCheckpoint(dir).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toContain(`${path} does not match config.json`);
    expect(err).toContain('missing: v.model.norm.weight');
    expect(err).toContain(`m.${q}: expected [${shapes.get(q)!.join(', ')}] got [1, `);
    expect(err).toContain('unexpected: w.stray');
    for (const step of [undefined, '-1', '2.5', 'x']) {
      await writeFile(
        path,
        encodeSafetensors(new Map([...moments('m.'), ...moments('v.')]), step === undefined ? {} : { step }),
      );
      await expect(loadCheckpoint(dir)).rejects.toThrow(`${path} metadata "step" must be a non-negative integer`);
    }
  });

  it('refuses to save weights that do not fit the config', async () => {
    const weights = initWeights(config, 7);
    weights.set('model.norm.weight', new Float32Array(3));
    await expect(saveCheckpoint(dir, { config, weights })).rejects.toThrow(
      `model.norm.weight: expected [${config.hidden_size}] got [3]`,
    );
  });
});
