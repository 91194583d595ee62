/**
 * Simulated separate machines: each "host" is a Linux network namespace joined to this machine by a
 * veth pair, so a process spawned in it has its own loopback and reaches this machine's services
 * (PostgreSQL, Temporal, the object store, all bound to 127.0.0.1) only over the veth address, through
 * a TCP forwarder in this process (the plumbing a router would be; it carries the real protocol bytes).
 * Processes in a namespace still share the file system: only the network is separate.
 *
 * Used by integration tests and `npm run scale-test`, so no jest APIs here. Needs root and iproute2.
 *
 * Names carry this process's pid so that `cleanupStaleHosts()` can remove what a crashed process left:
 * - namespace `opf-<name>-<pid>`;
 * - host-side veth `opf-<octet>` (≤ 15 chars): its name claims subnet 10.123.<octet>.0/24 atomically
 *   across processes (a second `ip link add` of the same name fails), its alias records the pid;
 * - the peer is created as `opf<pid>-<octet>` and renamed `eth0` once inside the namespace.
 */
import { execFile, execFileSync, spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { isPidAlive, sleep } from '../../services/process';

const PREFIX = 'opf';
const SUBNET = '10.123';
const NETNS_RE = /^opf-(.+)-(\d+)$/;
const HOST_IF_RE = /^opf-(\d{1,3})$/;
const PEER_IF_RE = /^opf(\d+)-(\d{1,3})$/;
const ALIAS_RE = /\boperaflow-host pid=(\d+)\b/;

export interface Host {
  /** The name given to createHost. */
  readonly name: string;
  /** The network namespace, `opf-<name>-<pid>`. */
  readonly netns: string;
  /** This machine's end of the veth pair (10.123.<octet>.1): what processes in the host connect to. */
  readonly hostAddress: string;
  /** The host's own address inside its namespace (10.123.<octet>.2, on its `eth0`). */
  readonly address: string;
  /** Host-side veth interface name. */
  readonly interface: string;
  /** Ports of 127.0.0.1 reachable from the host at hostAddress:port. */
  readonly ports: readonly number[];
  /** `url` with 127.0.0.1 / localhost / [::1] replaced by hostAddress (URLs and bare host:port). */
  rewrite(url: string): string;
  /** Runs `cmd args` in the namespace (`ip netns exec <netns> cmd …`; `ip` execs in place, same pid). */
  spawn(cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Pids of the processes currently in the namespace. */
  pids(): Promise<number[]>;
  /** Kills what runs in the namespace, closes the forwarders, deletes veth and namespace. Idempotent, never throws. */
  destroy(): Promise<void>;
}

export type NetnsAvailability = { ok: true } | { ok: false; reason: string };

// ---------------------------------------------------------------------------------------------------
// ip(8)

function findIp(): string | undefined {
  return ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p));
}

function ipBinary(): string {
  const ip = findIp();
  if (!ip) throw new Error('iproute2 `ip` not found (looked in /usr/sbin, /sbin, /usr/bin, /bin)');
  return ip;
}

function ipError(args: readonly string[], err: unknown, stderr?: string): Error {
  const detail = (stderr ?? '').trim() || (err as Error).message;
  return new Error(`ip ${args.join(' ')}: ${detail}`, { cause: err });
}

function ip(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(ipBinary(), args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(ipError(args, err, stderr));
      else resolve(stdout);
    });
  });
}

function ipSync(args: readonly string[]): string {
  try {
    return execFileSync(ipBinary(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  } catch (err) {
    throw ipError(args, err, String((err as { stderr?: unknown }).stderr ?? ''));
  }
}

/** Runs an ip command whose failure is acceptable (the thing is already gone). */
async function ipQuiet(args: readonly string[]): Promise<void> {
  try {
    await ip(args);
  } catch {
    // already gone, or never made
  }
}

function ipQuietSync(args: readonly string[]): void {
  try {
    ipSync(args);
  } catch {
    // already gone, or never made
  }
}

const parsePids = (out: string): number[] =>
  out
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
}

/** SIGKILLs every process in `netns` until none is left (a process may fork while we kill). */
async function killNamespace(netns: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let pids: number[];
    try {
      pids = parsePids(await ip(['netns', 'pids', netns]));
    } catch {
      return; // namespace gone
    }
    if (pids.length === 0 || Date.now() > deadline) return;
    killAll(pids);
    await sleep(50);
  }
}

function killNamespaceSync(netns: string): void {
  for (let i = 0; i < 20; i++) {
    let pids: number[];
    try {
      pids = parsePids(ipSync(['netns', 'pids', netns]));
    } catch {
      return;
    }
    if (pids.length === 0) return;
    killAll(pids);
    // No sleeping in an 'exit' handler: a short synchronous pause via Atomics.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}

async function listNetns(): Promise<string[]> {
  const out = await ip(['-j', 'netns', 'list']);
  if (!out.trim()) return [];
  return (JSON.parse(out) as { name: string }[]).map((n) => n.name);
}

interface LinkInfo {
  ifname: string;
  ifalias?: string;
}

async function listLinks(): Promise<LinkInfo[]> {
  const out = await ip(['-j', 'link', 'show']);
  return out.trim() ? (JSON.parse(out) as LinkInfo[]) : [];
}

// ---------------------------------------------------------------------------------------------------
// Availability

let availability: NetnsAvailability | undefined;

/** Whether network namespaces with veth pairs can be made here (root, iproute2, kernel support). Cached. */
export function netnsAvailable(): NetnsAvailability {
  availability ??= probe();
  return availability;
}

function probe(): NetnsAvailability {
  if (process.platform !== 'linux')
    return { ok: false, reason: `network namespaces need Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network namespaces need root (uid 0)' };
  if (!findIp()) return { ok: false, reason: 'iproute2 `ip` not found' };
  const ns = `${PREFIX}-probe-${process.pid}`;
  try {
    ipSync(['netns', 'add', ns]);
  } catch (err) {
    return { ok: false, reason: `cannot create a network namespace: ${(err as Error).message}` };
  }
  try {
    ipSync(['-n', ns, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1']);
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `cannot create a veth pair: ${(err as Error).message}` };
  } finally {
    ipQuietSync(['netns', 'del', ns]);
  }
}

// ---------------------------------------------------------------------------------------------------
// Forwarder

interface Forwarder {
  port: number;
  close(): Promise<void>;
}

/** How long a connection may stay half-closed and idle after its partner closed. */
const LINGER_MS = 10_000;

/**
 * Listens on `listenHost:port` and pipes each connection to 127.0.0.1:port. Half-close is passed on
 * (a FIN in one direction leaves the other open); an error on either side destroys both; a clean close
 * of one side ends the other after it has flushed, and destroys it if it then lingers idle.
 */
function startForwarder(listenHost: string, port: number): Promise<Forwarder> {
  const sockets = new Set<net.Socket>();
  /** `from`'s bytes go to `to`; an error on `from` aborts both, a clean close of `from` ends `to`. */
  const join = (from: net.Socket, to: net.Socket) => {
    from.pipe(to);
    from.on('error', () => {
      from.destroy();
      to.destroy();
    });
    from.on('close', (hadError) => {
      sockets.delete(from);
      if (hadError || to.destroyed) {
        to.destroy();
        return;
      }
      // Not destroy(): that would drop what `to` still has to flush (replies in flight). Its FIN is
      // on the way (pipe ends it); discard whatever its peer still sends, and give up on a peer that
      // never closes its side.
      to.end();
      to.resume();
      to.setTimeout(LINGER_MS, () => to.destroy());
    });
  };
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, keepAlive: true }, (client) => {
    const upstream = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true, keepAlive: true });
    sockets.add(client);
    sockets.add(upstream);
    join(client, upstream);
    join(upstream, client);
  });
  // Errors after listening (e.g. EMFILE on accept) must not crash the process hosting the forwarders.
  const ready = new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const inUse = `cannot forward ${listenHost}:${port}: address in use (a service on 0.0.0.0:${port}?)`;
      reject(err.code === 'EADDRINUSE' ? new Error(inUse, { cause: err }) : err);
    });
    server.listen({ host: listenHost, port }, () => {
      server.on('error', () => {});
      resolve();
    });
  });
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      if (!server.listening) return resolve();
      server.close(() => resolve());
    });
  return ready.then(
    () => ({ port, close }),
    async (err: unknown) => {
      await close();
      throw err;
    },
  );
}

// ---------------------------------------------------------------------------------------------------
// Hosts

interface LiveHost {
  host: Host;
  hostIf: string;
  netns: string;
}

const live = new Map<string, LiveHost>();
const reservedNames = new Set<string>();
let staleCleaned = false;
let exitHooked = false;

/** Synchronous teardown of every live host, for process 'exit' (no async work runs there). */
function destroyAllHostsSync(): void {
  for (const { hostIf, netns } of live.values()) {
    killNamespaceSync(netns);
    ipQuietSync(['link', 'del', hostIf]);
    ipQuietSync(['netns', 'del', netns]);
  }
  live.clear();
}

/**
 * Cleanup after this process dies, however it dies: a detached process that waits for EOF on its stdin
 * (the parent's end of the pipe closes when the parent exits, SIGKILL included), then kills what runs
 * in the parent's namespaces and deletes them and its links. An 'exit' listener alone is not enough:
 * a killed process runs none, and jest gives each test file its own copy of `process`, whose 'exit'
 * listeners never fire.
 */
const WATCHDOG = `
const { execFileSync } = require('child_process');
const [ip, ppid] = process.argv.slice(1);
const run = (args) => { try { return execFileSync(ip, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }); } catch { return ''; } };
const json = (args) => { try { return JSON.parse(run(args) || '[]'); } catch { return []; } };
function cleanup() {
  for (const { name } of json(['-j', 'netns', 'list'])) {
    if (!name.startsWith('${PREFIX}-') || !name.endsWith('-' + ppid)) continue;
    for (let i = 0; i < 50; i++) {
      const pids = run(['netns', 'pids', name]).split(/\\s+/).filter(Boolean).map(Number);
      if (pids.length === 0) break;
      for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch {} }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
    run(['netns', 'del', name]);
  }
  for (const { ifname, ifalias } of json(['-j', 'link', 'show'])) {
    const ours = (/^${PREFIX}-\\d+$/.test(ifname) && (ifalias || '').includes('pid=' + ppid + ' ')) ||
      new RegExp('^${PREFIX}' + ppid + '-\\\\d+$').test(ifname);
    if (ours) run(['link', 'del', ifname]);
  }
  process.exit(0);
}
process.stdin.on('data', () => {});
process.stdin.on('end', cleanup);
process.stdin.on('error', cleanup);
`;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', destroyAllHostsSync);
  try {
    const watchdog = spawnChild(process.execPath, ['-e', WATCHDOG, ipBinary(), String(process.pid)], {
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    watchdog.on('error', () => {});
    watchdog.stdin?.on('error', () => {});
    watchdog.unref();
    (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  } catch {
    // Without a watchdog, cleanupStaleHosts() still removes what a killed process left.
  }
}

const ipv4 = (octet: number, last: number) => `${SUBNET}.${octet}.${last}`;

/** Subnets 10.123.x.0/24 that some interface here already uses (someone else's, not claimed by name). */
async function usedOctets(): Promise<Set<number>> {
  const out = await ip(['-j', '-4', 'addr', 'show']);
  const used = new Set<number>();
  for (const link of out.trim() ? (JSON.parse(out) as { addr_info?: { local?: string }[] }[]) : []) {
    for (const a of link.addr_info ?? []) {
      const m = /^10\.123\.(\d+)\./.exec(a.local ?? '');
      if (m) used.add(Number(m[1]));
    }
  }
  return used;
}

/** Claims a subnet by creating its veth pair; starts at `preferred` and takes the next free one. */
async function claimSubnet(preferred: number): Promise<{ octet: number; hostIf: string; peerIf: string }> {
  const used = await usedOctets();
  for (let i = 0; i < 256; i++) {
    const octet = (preferred + i) % 256;
    if (used.has(octet)) continue;
    const hostIf = `${PREFIX}-${octet}`;
    const peerIf = `${PREFIX}${process.pid}-${octet}`;
    try {
      await ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', peerIf]);
      return { octet, hostIf, peerIf };
    } catch (err) {
      if (!/File exists/i.test((err as Error).message)) throw err;
    }
  }
  throw new Error(`no free subnet in ${SUBNET}.0.0/16 (256 hosts in use?)`);
}

/** Replaces a loopback host in a URL or `host:port` with `address`. */
/** The environment of a process in a host: no proxies (grpc-js would route through one), `extra` on top. */
export function hostEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of Object.keys(env)) if (/^(https?|grpc|all|no)_proxy$/i.test(k)) delete env[k];
  return env;
}

export function rewriteLoopback(url: string, address: string): string {
  return url.replace(/(^|[/@=,\s])(127\.0\.0\.1|localhost|\[::1\])(?=[:/?#,\s]|$)/gi, `$1${address}`);
}

/**
 * A simulated machine: namespace `opf-<name>-<pid>` with `eth0` at 10.123.<octet>.2/24, this machine at
 * 10.123.<octet>.1, where `octet` is `index` (mod 256) unless another process holds it, then the next
 * free one. Each of `forward`'s ports of 127.0.0.1 is reachable from inside at hostAddress:port.
 */
export async function createHost(name: string, index: number, forward: { port: number }[] = []): Promise<Host> {
  if (!/^[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*$/.test(name) || name.length > 40)
    throw new Error(`host name ${JSON.stringify(name)}: use letters, digits, _ and - (at most 40)`);
  if (!Number.isInteger(index) || index < 0) throw new Error(`host index must be a non-negative integer, got ${index}`);
  for (const { port } of forward)
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`cannot forward port ${port}`);
  const available = netnsAvailable();
  if (!available.ok) throw new Error(`cannot simulate hosts: ${available.reason}`);
  const netns = `${PREFIX}-${name}-${process.pid}`;
  if (reservedNames.has(netns)) throw new Error(`host ${name} already exists in this process`);
  reservedNames.add(netns);
  hookExit();
  if (!staleCleaned) {
    staleCleaned = true;
    await cleanupStaleHosts();
  }

  let hostIf: string | undefined;
  const forwarders: Forwarder[] = [];
  let nsCreated = false;
  try {
    const claim = await claimSubnet(index % 256);
    hostIf = claim.hostIf;
    await ip(['link', 'set', 'dev', hostIf, 'alias', `operaflow-host pid=${process.pid} netns=${netns}`]);
    await ip(['netns', 'add', netns]);
    nsCreated = true;
    const hostAddress = ipv4(claim.octet, 1);
    const address = ipv4(claim.octet, 2);
    await ip(['link', 'set', claim.peerIf, 'netns', netns]);
    await ip(['-n', netns, 'link', 'set', claim.peerIf, 'name', 'eth0']);
    await ip(['-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
    await ip(['-n', netns, 'link', 'set', 'eth0', 'up']);
    await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
    await ip(['addr', 'add', `${hostAddress}/24`, 'dev', hostIf]);
    await ip(['link', 'set', hostIf, 'up']);
    for (const port of new Set(forward.map((f) => f.port))) forwarders.push(await startForwarder(hostAddress, port));

    const ifName = hostIf;
    let destroying: Promise<void> | undefined;
    const host: Host = {
      name,
      netns,
      hostAddress,
      address,
      interface: ifName,
      ports: forwarders.map((f) => f.port),
      rewrite: (url) => rewriteLoopback(url, hostAddress),
      spawn(cmd, args = [], opts = {}) {
        if (destroying) throw new Error(`host ${name} is destroyed`);
        return spawnChild(ipBinary(), ['netns', 'exec', netns, cmd, ...args], opts);
      },
      async pids() {
        try {
          return parsePids(await ip(['netns', 'pids', netns]));
        } catch {
          return [];
        }
      },
      destroy() {
        destroying ??= (async () => {
          live.delete(netns);
          reservedNames.delete(netns);
          await killNamespace(netns);
          await Promise.all(forwarders.map((f) => f.close().catch(() => {})));
          await ipQuiet(['link', 'del', ifName]);
          await ipQuiet(['netns', 'del', netns]);
        })().catch(() => {});
        return destroying;
      },
    };
    live.set(netns, { host, hostIf, netns });
    return host;
  } catch (err) {
    await Promise.all(forwarders.map((f) => f.close().catch(() => {})));
    if (nsCreated) await killNamespace(netns);
    if (hostIf) await ipQuiet(['link', 'del', hostIf]);
    if (nsCreated) await ipQuiet(['netns', 'del', netns]);
    reservedNames.delete(netns);
    throw err;
  }
}

/** Destroys every host this process made (for `finally` / `afterAll`). */
export async function destroyAllHosts(): Promise<void> {
  await Promise.all([...live.values()].map(({ host }) => host.destroy()));
}

/**
 * Removes namespaces and veth links with our prefix whose creating process is gone (a crash, SIGKILL).
 * Returns what it removed.
 */
export async function cleanupStaleHosts(): Promise<{ netns: string[]; links: string[] }> {
  const removed = { netns: [] as string[], links: [] as string[] };
  if (!findIp()) return removed;
  const stale = (pid: number) => pid !== process.pid && !isPidAlive(pid);
  for (const ns of await listNetns().catch(() => [])) {
    const m = NETNS_RE.exec(ns);
    if (!m || !stale(Number(m[2]))) continue;
    await killNamespace(ns);
    await ipQuiet(['netns', 'del', ns]);
    removed.netns.push(ns);
  }
  // Links left on this side: a host-side veth whose alias names a dead pid, or a peer never moved.
  for (const link of await listLinks().catch(() => [])) {
    const pid = HOST_IF_RE.test(link.ifname)
      ? Number(ALIAS_RE.exec(link.ifalias ?? '')?.[1] ?? NaN)
      : Number(PEER_IF_RE.exec(link.ifname)?.[1] ?? NaN);
    if (!Number.isInteger(pid) || !stale(pid)) continue;
    await ipQuiet(['link', 'del', link.ifname]);
    removed.links.push(link.ifname);
  }
  return removed;
}
