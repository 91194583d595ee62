/**
 * The services operaflow needs — PostgreSQL and Temporal, and on request an S3-compatible object store —
 * for the CLI, `npm start`, workers and tests. Externally provided services (DATABASE_URL,
 * TEMPORAL_ADDRESS, OPERAFLOW_S3_ENDPOINT) are only health-checked and never stopped; otherwise local
 * ones are started on 127.0.0.1 and reused by every later call.
 */
import { connectDb, redactUrl } from '../db/client';
import { migrateDb } from '../db/migrate';
import {
  DEFAULT_DATABASE,
  localPostgresStatus,
  startLocalPostgres,
  stopLocalPostgres,
  localDatabaseUrl,
} from './postgres';
import { ensureDatabase, withDatabase } from '../db/admin';
import fs from 'node:fs';
import path from 'node:path';
import { stateDir } from './paths';
import { checkTemporal, ownedTemporalPid, startLocalTemporal, stopLocalTemporal, temporalPorts } from './temporal';
import { checkS3, localS3Status, MOTO_PIN, startLocalS3, stopLocalS3 } from './s3';

export type Log = (line: string) => void;

export interface ServiceEndpoints {
  databaseUrl: string;
  temporalAddress: string;
  /** The S3 endpoint (`http://127.0.0.1:PORT` or OPERAFLOW_S3_ENDPOINT); undefined unless asked for with `s3: true`. */
  s3Endpoint: string | undefined;
  /** What this call started (false when already running or external): what a caller may stop again. */
  started: { postgres: boolean; temporal: boolean; s3: boolean };
}

export interface EnsureServicesOptions {
  log?: Log;
  /** Database name on the local server (default `operaflow`); with DATABASE_URL, replaces its database. */
  database?: string;
  /** Apply db/migrations (default true). */
  migrate?: boolean;
  /**
   * Also ensure an S3 server (default false): a local moto server, installed from PyPI on first use,
   * unless OPERAFLOW_S3_ENDPOINT names one. Only the S3 artifact store (and the tests) need it.
   */
  s3?: boolean;
}

async function ensurePostgres(opts: EnsureServicesOptions, log: Log): Promise<{ url: string; started: boolean }> {
  const external = process.env.DATABASE_URL;
  if (external) {
    const url = opts.database ? withDatabase(external, opts.database) : external;
    try {
      await (await connectDb(url, { max: 1 })).close();
    } catch (err) {
      // Only a missing database is fixed here; the maintenance-db connection this needs may be
      // forbidden on hosted servers, so it is not tried when the database exists.
      if ((err as { code?: string }).code !== '3D000') throw err;
      await ensureDatabase(url);
      log(`Created database ${new URL(url).pathname.slice(1)}`);
    }
    return { url, started: false };
  }
  const server = await startLocalPostgres(log);
  const url = withDatabase(server.url, opts.database ?? DEFAULT_DATABASE);
  if (await ensureDatabase(url)) log(`Created database ${opts.database ?? DEFAULT_DATABASE}`);
  return { url, started: server.started };
}

async function ensureTemporal(log: Log): Promise<{ address: string; started: boolean }> {
  const external = process.env.TEMPORAL_ADDRESS;
  if (external) {
    const health = await checkTemporal(external, 10_000);
    if (!health.ok) {
      throw new Error(
        `TEMPORAL_ADDRESS=${external} is not a healthy Temporal server (${health.error}). Start it, or unset TEMPORAL_ADDRESS to let operaflow run a local dev server.`,
      );
    }
    return { address: external, started: false };
  }
  const local = await startLocalTemporal(log);
  return { address: local.address, started: local.started };
}

async function ensureS3(enabled: boolean | undefined, log: Log): Promise<{ endpoint?: string; started: boolean }> {
  if (!enabled) return { started: false };
  const s3 = await startLocalS3(log);
  return { endpoint: s3.endpoint, started: s3.started };
}

/** Brings the services up (idempotent; quick when they already run) and migrates the database. */
export async function ensureServices(opts: EnsureServicesOptions = {}): Promise<ServiceEndpoints> {
  const log = opts.log ?? (() => {});
  // In parallel: PostgreSQL starts in about a second, Temporal in a few (or minutes when its CLI is
  // built), S3 in about one (plus half a minute the first time, when moto is installed).
  const [pgResult, temporalResult, s3Result] = await Promise.allSettled([
    ensurePostgres(opts, log),
    ensureTemporal(log),
    ensureS3(opts.s3, log),
  ]);
  if (pgResult.status === 'rejected' || temporalResult.status === 'rejected' || s3Result.status === 'rejected') {
    const errors = [pgResult, temporalResult, s3Result].flatMap((r) =>
      r.status === 'rejected' ? [(r.reason as Error).message] : [],
    );
    throw new Error(errors.join('\n'));
  }
  if (opts.migrate !== false) await migrateDb(pgResult.value.url);
  return {
    databaseUrl: pgResult.value.url,
    temporalAddress: temporalResult.value.address,
    s3Endpoint: s3Result.value.endpoint,
    started: { postgres: pgResult.value.started, temporal: temporalResult.value.started, s3: s3Result.value.started },
  };
}

/**
 * Points this process's environment at `s`, so the CLI commands and workers it spawns use the same
 * services; a local S3 server (moto) takes any credentials, so placeholders stand in when none are set.
 */
export function useServices(s: ServiceEndpoints): void {
  process.env.DATABASE_URL = s.databaseUrl;
  process.env.TEMPORAL_ADDRESS = s.temporalAddress;
  if (!s.s3Endpoint || process.env.OPERAFLOW_S3_ENDPOINT) return;
  process.env.OPERAFLOW_S3_ENDPOINT = s.s3Endpoint;
  process.env.AWS_ACCESS_KEY_ID ??= 'operaflow';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'operaflow';
}

/**
 * `services:up` marks the services as wanted by the user; test teardown leaves marked services
 * running even when its own setup happened to start them first. `services:down` clears the mark.
 */
const keepMarker = () => path.join(stateDir(), 'services.keep');
export function markServicesKept(keep: boolean): void {
  if (keep) fs.writeFileSync(keepMarker(), new Date().toISOString());
  else fs.rmSync(keepMarker(), { force: true });
}
export function servicesKept(): boolean {
  return fs.existsSync(keepMarker());
}

/** Stops the local services this checkout runs; external ones (env URLs, another checkout's Temporal) are left alone. */
export async function stopServices(
  opts: { log?: Log; postgres?: boolean; temporal?: boolean; s3?: boolean } = {},
): Promise<{ postgres: boolean; temporal: boolean; s3: boolean }> {
  const log = opts.log ?? (() => {});
  const stopPg = opts.postgres !== false && !process.env.DATABASE_URL;
  const stopTemporal = opts.temporal !== false && !process.env.TEMPORAL_ADDRESS;
  const stopS3 = opts.s3 !== false && !process.env.OPERAFLOW_S3_ENDPOINT;
  const [postgres, temporal, s3] = await Promise.all([
    stopPg ? stopLocalPostgres(log) : false,
    stopTemporal ? stopLocalTemporal(log) : false,
    stopS3 ? stopLocalS3(log) : false,
  ]);
  return { postgres, temporal, s3 };
}

export interface ServiceStatus {
  service: 'postgres' | 'temporal' | 's3';
  /** DATABASE_URL (password redacted), Temporal host:port or the S3 endpoint; undefined when not running. */
  address: string | undefined;
  healthy: boolean;
  /** external: from the environment; local: started by this checkout; shared: another process's server on the default port. */
  origin: 'external' | 'local' | 'shared' | 'none';
  detail: string;
}

async function postgresStatus(): Promise<ServiceStatus> {
  const external = process.env.DATABASE_URL;
  const url =
    external ??
    (() => {
      const s = localPostgresStatus();
      return s.running ? localDatabaseUrl(s.running.port) : undefined;
    })();
  if (!url) {
    const s = localPostgresStatus();
    return {
      service: 'postgres',
      address: undefined,
      healthy: false,
      origin: 'none',
      detail: s.error ?? `not running (data ${s.dataDir})`,
    };
  }
  try {
    const handle = await connectDb(url, { max: 1 });
    const version = await handle.pool.query<{ server_version: string }>('show server_version');
    await handle.close();
    return {
      service: 'postgres',
      address: redactUrl(url),
      healthy: true,
      origin: external ? 'external' : 'local',
      detail: `PostgreSQL ${version.rows[0]?.server_version ?? '?'}`,
    };
  } catch (err) {
    return {
      service: 'postgres',
      address: redactUrl(url),
      healthy: false,
      origin: external ? 'external' : 'local',
      detail: (err as Error).message,
    };
  }
}

async function temporalStatus(): Promise<ServiceStatus> {
  const external = process.env.TEMPORAL_ADDRESS;
  const address = external ?? `127.0.0.1:${temporalPorts().port}`;
  const pid = external ? undefined : ownedTemporalPid();
  const health = await checkTemporal(address, 3_000);
  const origin = external ? 'external' : pid ? 'local' : health.ok ? 'shared' : 'none';
  const detail = health.ok
    ? `healthy${pid ? ` (pid ${pid}, UI http://127.0.0.1:${temporalPorts().uiPort})` : ''}`
    : `not reachable: ${health.error}`;
  return {
    service: 'temporal',
    address: health.ok || external || pid ? address : undefined,
    healthy: health.ok,
    origin,
    detail,
  };
}

async function s3Status(): Promise<ServiceStatus> {
  const s = localS3Status();
  const endpoint = s.external ?? s.running?.endpoint;
  if (!endpoint) {
    const install = s.installed ? `moto ${MOTO_PIN.version} installed` : 'moto not installed yet';
    return {
      service: 's3',
      address: undefined,
      healthy: false,
      origin: 'none',
      detail: `not running (${install}; only the S3 artifact store needs it)`,
    };
  }
  const health = await checkS3(endpoint, 3_000);
  return {
    service: 's3',
    address: endpoint,
    healthy: health.ok,
    origin: s.external ? 'external' : 'local',
    detail: health.ok
      ? `healthy${s.running ? ` (moto ${MOTO_PIN.version}, pid ${s.running.pid}, log ${s.log})` : ''}`
      : `not reachable: ${health.error}`,
  };
}

export async function servicesStatus(): Promise<ServiceStatus[]> {
  return Promise.all([postgresStatus(), temporalStatus(), s3Status()]);
}
