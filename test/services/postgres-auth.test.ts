/**
 * Nobody gets in who should not, and nothing confirmed is lost: the local PostgreSQL (the one the test
 * setup started, unless DATABASE_URL pointed elsewhere) refuses connections without its password and
 * with a wrong one, keeps that password in a file only its owner can read, has no `trust` rule left in
 * pg_hba.conf, and commits synchronously.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { findPgBinaries, startLocalPostgres, stopLocalPostgres } from '../../services/postgres';
import { portIsFree } from '../../services/process';
import { isRoot, postgresBaseDir } from '../../services/paths';

const original = JSON.parse(process.env.OPERAFLOW_TEST_ORIGINAL_ENV ?? '{}') as { DATABASE_URL?: string };
const local = original.DATABASE_URL === undefined;
const url = new URL(process.env.DATABASE_URL!);

async function connectError(connectionString: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString });
  try {
    await client.connect();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
}

(local ? describe : describe.skip)('the local PostgreSQL', () => {
  const base = postgresBaseDir();
  const dataDir = path.join(base, `data-${findPgBinaries().major}`);

  test('refuses a connection without the password or with a wrong one', async () => {
    const bare = new URL(url);
    bare.password = '';
    expect(await connectError(bare.toString())).toMatch(/password/i);
    const wrong = new URL(url);
    wrong.password = 'not-the-password';
    expect(await connectError(wrong.toString())).toMatch(/password authentication failed/);
    expect(await connectError(url.toString())).toBeUndefined();
  });

  test('keeps its password in a file of mode 600 that another user cannot read', () => {
    const file = path.join(base, 'password');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(decodeURIComponent(url.password)).toBe(fs.readFileSync(file, 'utf8').trim());
    if (isRoot()) {
      const other = spawnSync('su', ['-s', '/bin/sh', 'nobody', '-c', `cat ${file}`], { encoding: 'utf8' });
      expect(other.status).not.toBe(0);
      expect(other.stdout).toBe('');
    }
  });

  test('has no trust rule and commits synchronously', async () => {
    const rules = fs
      .readFileSync(path.join(dataDir, 'pg_hba.conf'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.trim().startsWith('#'));
    expect(rules.length).toBeGreaterThan(0);
    for (const rule of rules) expect(rule).toMatch(/scram-sha-256\s*$/);
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      expect(
        (await client.query<{ synchronous_commit: string }>('show synchronous_commit')).rows[0]!.synchronous_commit,
      ).toBe('on');
      expect((await client.query<{ fsync: string }>('show fsync')).rows[0]!.fsync).toBe('on');
    } finally {
      await client.end();
    }
  });
});

(local ? test : test.skip)(
  'a cluster made before passwords (trust for every local user) requires a password after its next start',
  async () => {
    const bins = findPgBinaries();
    const base = fs.mkdtempSync('/var/tmp/operaflow-pg-upgrade-');
    const as = isRoot()
      ? {
          uid: Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout),
          gid: Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout),
        }
      : undefined;
    if (as) fs.chownSync(base, as.uid, as.gid);
    const init = spawnSync(
      path.join(bins.dir, 'initdb'),
      ['-D', path.join(base, `data-${bins.major}`), '-U', 'postgres', '--auth=trust'],
      { uid: as?.uid, gid: as?.gid, env: { PATH: process.env.PATH, LANG: 'C' }, encoding: 'utf8' },
    );
    expect(init.status).toBe(0);
    let port = 5500;
    while (!(await portIsFree(port))) port++;
    const saved = { dir: process.env.OPERAFLOW_PG_DIR, port: process.env.OPERAFLOW_PG_PORT };
    process.env.OPERAFLOW_PG_DIR = base;
    process.env.OPERAFLOW_PG_PORT = String(port);
    try {
      const lines: string[] = [];
      const server = await startLocalPostgres((l) => lines.push(l));
      expect(lines.join('\n')).toMatch(/now requires its password/);
      const bare = new URL(server.url);
      bare.password = '';
      expect(await connectError(bare.toString())).toMatch(/password/i);
      expect(await connectError(server.url.replace(/\/operaflow$/, '/postgres'))).toBeUndefined();
    } finally {
      await stopLocalPostgres();
      process.env.OPERAFLOW_PG_DIR = saved.dir;
      process.env.OPERAFLOW_PG_PORT = saved.port;
      if (saved.dir === undefined) delete process.env.OPERAFLOW_PG_DIR;
      if (saved.port === undefined) delete process.env.OPERAFLOW_PG_PORT;
      fs.rmSync(base, { recursive: true, force: true });
    }
  },
);
