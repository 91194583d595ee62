/**
 * `npm run experiment` in small: one seed, one GRPO iteration of the smoke model, through the real script
 * (its own worker, the sweep workflow, the probe, the figure in chromium). Its results.md has every
 * variant, every metric row, the p-value rows and the probe table; its PNG is a PNG.
 */
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { EXPERIMENT_VARIANTS, REPORT_METRICS } from '../../scripts/cli/experiment-report';
import { PROBE_FILLERS } from '../../opera/probe';
import { ROOT, removeTmpDirs, smokeYaml, testEnv, tmpDir, writeConfig } from './helpers';

jest.setTimeout(400_000);

afterAll(() => removeTmpDirs());

test('a one-seed experiment writes results.md with every column and results.png', async () => {
  const out = tmpDir();
  const config = writeConfig(
    smokeYaml({
      name: 'exp',
      artifacts: tmpDir(),
      grpo: '{ iterations: 1, promptsPerIteration: 4, groupSize: 4, miniBatchSize: 8, lr: 0.001, maxNewTokens: 48 }',
    }),
  );
  const group = `exp-${process.pid}`;
  const args = ['--import', 'tsx', join(ROOT, 'scripts', 'experiment.ts')];
  const flags = ['--seeds', '1', '--config', config, '--group', group, '--out', out, '--summary', 'Two sentences.'];
  const env = testEnv(`exp-${process.pid}-`);
  const { code, output } = await new Promise<{ code: number | null; output: string }>((done) => {
    const child = spawn(process.execPath, [...args, ...flags], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('close', (c) => done({ code: c, output }));
  });
  if (code !== 0) throw new Error(`experiment exited ${code}:\n${output}`);

  const md = readFileSync(join(out, 'results.md'), 'utf8');
  process.stderr.write(md);
  expect(md).toContain('Two sentences.');
  for (const v of EXPERIMENT_VARIANTS) expect(md).toContain(`\`${v.label}\``);
  const finalTable = md.split('## Final evaluation')[1]!.split('##')[0]!;
  for (const [name] of REPORT_METRICS) {
    const row = finalTable.split('\n').find((l) => l.startsWith(`| \`${name}\``));
    expect(row).toBeDefined();
    // One cell per variant, each a number (one seed: no ± std).
    const cells = row!
      .split('|')
      .slice(2, -1)
      .map((c) => c.trim());
    expect(cells).toHaveLength(EXPERIMENT_VARIANTS.length);
    // Recorded by every evaluation: a number in every column (the others may be n/a on the smoke model).
    if (['eval/hidden_check', 'eval/reward', 'eval/ref_logp', 'eval/response_tokens'].includes(name))
      for (const cell of cells) expect(cell).toMatch(/^-?\d+\.\d{4}$/);
  }
  expect(finalTable).toContain('p vs sft-only');
  expect(finalTable).toContain('n/a (one seed)');
  // Every completed run counted: 1 per variant.
  for (const v of EXPERIMENT_VARIANTS) expect(md).toMatch(new RegExp(`\\| \`${v.label}\` \\|[^\\n]*\\| 1 \\|`));
  const probe = md.split('## Reward-hacking probe')[1]!;
  const probeRows = probe.split('\n').filter((l) => /^\| (guiding|substringOnly):/.test(l));
  expect(probeRows).toHaveLength(Object.keys(PROBE_FILLERS).length * 4);
  expect(md).toMatch(/wall time \*\*\d+\.\d min\*\*/);
  const png = readFileSync(join(out, 'results.png'));
  expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  expect(png.length).toBeGreaterThan(10_000);
});
