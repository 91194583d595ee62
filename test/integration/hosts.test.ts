/**
 * Simulated hosts (test/integration/hosts.ts): a process in a host's network namespace reaches the test
 * PostgreSQL and Temporal only through the host's veth address and this process's forwarders; its own
 * 127.0.0.1 is its own. Destroying a host kills what runs in it and leaves no namespace or link behind.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import {
  cleanupStaleHosts,
  createHost,
  destroyAllHosts,
  hostEnv,
  netnsAvailable,
  rewriteLoopback,
  type Host,
} from './hosts';
import { ROOT, collectOutput, type CliResult } from './helpers';

const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p)) ?? 'ip';
const ip = (...args: string[]) => execFileSync(IP, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const netnsNames = () => ip('netns', 'list');
const linkNames = () => ip('-o', 'link', 'show');

/** A loopback service's port, or why it cannot be forwarded. */
function loopbackPort(hostPort: string): number | string {
  const m = /^(127\.0\.0\.1|localhost|\[::1\]):(\d+)$/.exec(hostPort);
  return m ? Number(m[2]) : `${hostPort} is not a loopback address (forwarders only reach this machine's 127.0.0.1)`;
}

const databaseUrl = process.env.DATABASE_URL ?? '';
const temporalAddress = process.env.TEMPORAL_ADDRESS ?? '';
const pgPort = databaseUrl ? loopbackPort(new URL(databaseUrl).host) : 'DATABASE_URL is not set';
const temporalPort = temporalAddress ? loopbackPort(temporalAddress) : 'TEMPORAL_ADDRESS is not set';
// The object store is optional here (checked when globalSetup started one on this machine).
const s3Endpoint = process.env.OPERAFLOW_S3_ENDPOINT ?? '';
const s3Port = s3Endpoint ? loopbackPort(new URL(s3Endpoint).host) : 'OPERAFLOW_S3_ENDPOINT is not set';
const availability = netnsAvailable();
const skipReason = !availability.ok
  ? availability.reason
  : typeof pgPort === 'string'
    ? pgPort
    : typeof temporalPort === 'string'
      ? temporalPort
      : undefined;

function nodeIn(host: Host, script: string, env: Record<string, string>): Promise<CliResult> {
  return collectOutput(
    host.spawn(process.execPath, ['-e', script], { cwd: ROOT, env: hostEnv(env), stdio: ['ignore', 'pipe', 'pipe'] }),
    `node in ${host.name}`,
    60_000,
  );
}

function json<T>(r: CliResult): T {
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as T;
}

const PG_SCRIPT = `
const pg = require('pg');
const os = require('os');
(async () => {
  const out = {};
  const c = new pg.Client({ connectionString: process.env.URL });
  await c.connect();
  out.select = (await c.query('select 1 as one')).rows[0].one;
  // 4 MB through the forwarder: backpressure in both pipes.
  out.bigLength = (await c.query("select repeat('x', 4000000) as s")).rows[0].s.length;
  await c.end();
  // Many connections at once through one forwarder.
  const many = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    const k = new pg.Client({ connectionString: process.env.URL });
    await k.connect();
    const { rows } = await k.query('select $1::int + 1 as n', [i]);
    await k.end();
    return rows[0].n;
  }));
  out.manyOk = many.every((n, i) => n === i + 1);
  // The namespace's own loopback: nothing listens there.
  const direct = new pg.Client({ connectionString: process.env.DIRECT_URL, connectionTimeoutMillis: 5000 });
  out.direct = await direct.connect().then(() => 'connected', (e) => e.code || e.message);
  out.hostname = os.hostname();
  out.addresses = Object.values(os.networkInterfaces()).flat().filter((a) => a.family === 'IPv4').map((a) => a.address);
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`;

const TEMPORAL_SCRIPT = `
const { Connection } = require('@temporalio/client');
(async () => {
  const connection = await Connection.connect({ address: process.env.ADDR, connectTimeout: 10000 });
  const first = await connection.workflowService.getSystemInfo({});
  // The same HTTP/2 connection, idle for a while, then several calls at once.
  await new Promise((r) => setTimeout(r, 2000));
  const again = await Promise.all(Array.from({ length: 10 }, () => connection.workflowService.getSystemInfo({})));
  await connection.close();
  console.log(JSON.stringify({ serverVersion: first.serverVersion, again: again.length }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

if (skipReason !== undefined) {
  test.skip(`simulated hosts skipped: ${skipReason}`, () => {});
} else {
  const pgP = pgPort as number;
  const temporalP = temporalPort as number;

  describe('simulated hosts (network namespaces)', () => {
    let a: Host;
    let b: Host;

    beforeAll(async () => {
      [a, b] = await Promise.all([
        createHost('hosts-test-a', 1, [{ port: pgP }, { port: temporalP }]),
        createHost('hosts-test-b', 2, [
          { port: pgP },
          { port: temporalP },
          ...(typeof s3Port === 'number' ? [{ port: s3Port }] : []),
        ]),
      ]);
    });

    afterAll(async () => {
      await destroyAllHosts();
    });

    test('rewrite replaces loopback hosts only', () => {
      expect(rewriteLoopback('postgres://u:p@127.0.0.1:5432/db', '10.123.1.1')).toBe(
        'postgres://u:p@10.123.1.1:5432/db',
      );
      expect(rewriteLoopback('localhost:7233', '10.123.1.1')).toBe('10.123.1.1:7233');
      expect(rewriteLoopback('http://[::1]:9000/bucket', '10.123.1.1')).toBe('http://10.123.1.1:9000/bucket');
      expect(rewriteLoopback('postgres://db.example:5432/x', '10.123.1.1')).toBe('postgres://db.example:5432/x');
      expect(a.rewrite(temporalAddress)).toBe(`${a.hostAddress}:${temporalP}`);
    });

    test('hosts get distinct subnets, names carry the pid, interface names fit in 15 chars', () => {
      expect(a.netns).toBe(`opf-hosts-test-a-${process.pid}`);
      expect(a.address).toMatch(/^10\.123\.\d+\.2$/);
      expect(a.hostAddress).toBe(a.address.replace(/\.2$/, '.1'));
      expect(b.address).not.toBe(a.address);
      expect(a.interface.length).toBeLessThanOrEqual(15);
      expect(netnsNames()).toContain(a.netns);
      expect(a.ports).toEqual([pgP, temporalP]);
    });

    test.each([
      ['a', () => a],
      ['b', () => b],
    ])('host %s reaches PostgreSQL only through its veth address', async (_, host) => {
      const h = host();
      const out = json<{
        select: number;
        bigLength: number;
        manyOk: boolean;
        direct: string;
        hostname: string;
        addresses: string[];
      }>(await nodeIn(h, PG_SCRIPT, { URL: h.rewrite(databaseUrl), DIRECT_URL: databaseUrl }));
      expect(out.select).toBe(1);
      expect(out.bigLength).toBe(4_000_000);
      expect(out.manyOk).toBe(true);
      expect(out.direct).toBe('ECONNREFUSED');
      // Only the namespace's interfaces: its loopback and eth0; none of this machine's addresses.
      expect(out.addresses.sort()).toEqual(['127.0.0.1', h.address].sort());
      // `ip netns exec` does not change the UTS hostname: workers are told apart by env, not hostname.
      expect(typeof out.hostname).toBe('string');
    });

    test('Temporal gRPC works from inside a host', async () => {
      const out = json<{ serverVersion: string; again: number }>(
        await nodeIn(b, TEMPORAL_SCRIPT, { ADDR: b.rewrite(temporalAddress) }),
      );
      expect(out.serverVersion).toMatch(/\d+\.\d+/);
      expect(out.again).toBe(10);
    });

    (typeof s3Port === 'number' ? test : test.skip)('the object store answers HTTP from inside a host', async () => {
      const script = `fetch(process.env.S3).then((r) => console.log(JSON.stringify({ status: r.status })), (e) => { console.error(e); process.exit(1); })`;
      const out = json<{ status: number }>(await nodeIn(b, script, { S3: b.rewrite(s3Endpoint) }));
      expect(out.status).toBeGreaterThanOrEqual(200);
      expect(out.status).toBeLessThan(500);
    });

    test('the forwarder carries many concurrent connections without truncating replies', async () => {
      // An echo server that closes as soon as its client has sent everything: the forwarder must still
      // deliver the whole reply (destroying a socket when its partner closes would cut it short).
      const echo = net.createServer((s) => s.pipe(s));
      await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
      const port = (echo.address() as net.AddressInfo).port;
      const c = await createHost('hosts-test-c', 3, [{ port }]);
      try {
        const script = `
const net = require('net');
const N = 500, SIZE = 200000;
Promise.all(Array.from({ length: N }, () => new Promise((res, rej) => {
  const s = net.connect(Number(process.env.PORT), process.env.HOST);
  let got = 0;
  s.on('connect', () => s.end(Buffer.alloc(SIZE, 7)));
  s.on('data', (d) => (got += d.length));
  s.on('error', rej);
  s.on('close', () => res(got === SIZE));
}))).then((oks) => console.log(JSON.stringify({ ok: oks.filter(Boolean).length, of: N })), (e) => { console.error(e); process.exit(1); });`;
        const out = json<{ ok: number; of: number }>(
          await nodeIn(c, script, { HOST: c.hostAddress, PORT: String(port) }),
        );
        expect(out).toEqual({ ok: 500, of: 500 });
      } finally {
        await c.destroy();
        await new Promise((r) => echo.close(r));
      }
    });

    test('destroy kills what runs in the host and removes namespace and link; twice is fine', async () => {
      const sleeper = a.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
      const exited = new Promise<NodeJS.Signals | null>((r) => sleeper.on('exit', (_code, signal) => r(signal)));
      await new Promise((r) => setTimeout(r, 300));
      expect(await a.pids()).toContain(sleeper.pid);
      await Promise.all([a.destroy(), a.destroy()]);
      await a.destroy();
      expect(await exited).toBe('SIGKILL');
      expect(netnsNames()).not.toContain(a.netns);
      expect(linkNames()).not.toContain(`${a.interface}:`);
      expect(linkNames()).not.toContain(`${a.interface}@`);
      expect(() => a.spawn(process.execPath, ['-e', '0'])).toThrow(/destroyed/);
      await destroyAllHosts();
      expect(netnsNames()).not.toContain(b.netns);
    });
  });

  test("cleanupStaleHosts removes a dead process's namespaces and links, not a live one's", async () => {
    const dead = await new Promise<number>((r) => {
      const child = spawn(process.execPath, ['-e', '0']);
      child.on('exit', () => r(child.pid!));
    });
    const staleNs = `opf-stale-${dead}`;
    const liveNs = `opf-live-${process.pid}`;
    const unmovedPeer = `opf${dead}-9`;
    let aliased: string | undefined;
    try {
      ip('netns', 'add', staleNs);
      ip('netns', 'add', liveNs);
      ip('link', 'add', unmovedPeer, 'type', 'veth', 'peer', 'name', `opfz${dead}`);
      for (let octet = 254; octet > 200 && !aliased; octet--) {
        try {
          ip('link', 'add', `opf-${octet}`, 'type', 'veth', 'peer', 'name', `opfy${dead}`);
          aliased = `opf-${octet}`;
        } catch {
          // taken
        }
      }
      ip('link', 'set', 'dev', aliased!, 'alias', `operaflow-host pid=${dead} netns=gone`);
      const removed = await cleanupStaleHosts();
      expect(removed.netns).toContain(staleNs);
      expect(removed.netns).not.toContain(liveNs);
      expect(removed.links).toEqual(expect.arrayContaining([unmovedPeer, aliased]));
      expect(netnsNames()).not.toContain(staleNs);
      expect(netnsNames()).toContain(liveNs);
      expect(linkNames()).not.toContain(`opfz${dead}`);
      expect(linkNames()).not.toContain(`opfy${dead}`);
    } finally {
      for (const args of [
        ['netns', 'del', staleNs],
        ['netns', 'del', liveNs],
        ['link', 'del', unmovedPeer],
        ...(aliased ? [['link', 'del', aliased]] : []),
      ]) {
        try {
          ip(...args);
        } catch {
          // removed by the code under test
        }
      }
    }
  });
}
