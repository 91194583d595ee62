/**
 * The dashboard's server (fastify): pages at stable URLs (`/`, `/runs/<id>`, `/runs/<id>/timeline`,
 * `/runs/<id>/samples`, `/compare?runs=a,b`), each also as JSON under `/api/…` (ui/api.ts), and the
 * browser code under `/assets/`. Read-only unless an `act` function is given (`--allow-actions`).
 * Bound to loopback unless a token (OPERAFLOW_UI_TOKEN) guards it: run configs, prompts and
 * generations are not for everyone. With a token, scripts send `Authorization: Bearer <token>`; a
 * browser opens any page once with `?token=<token>` and keeps it in an HttpOnly cookie.
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Db } from '../db/client';
import { getRun } from '../db/queries';
import { registerActions, type Act } from './actions';
import { registerApi } from './api';
import { registerPages } from './pages';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const COOKIE = 'operaflow_ui_token';

/** Refuses to serve beyond this machine without a token: the API shows configs, prompts and generations. */
export function bindProblem(host: string, token: string | undefined): string | undefined {
  if (LOOPBACK.has(host) || token) return undefined;
  return `ui: binding to ${host} exposes every run beyond this machine: set OPERAFLOW_UI_TOKEN (clients then send "Authorization: Bearer <token>"), or bind to 127.0.0.1`;
}

const sameToken = (given: string, token: string) =>
  given.length === token.length && timingSafeEqual(Buffer.from(given), Buffer.from(token));

function tokenOf(req: FastifyRequest): string {
  const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
  if (bearer) return bearer;
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === COOKIE) return decodeURIComponent(value.join('='));
  }
  return '';
}

function requireToken(app: FastifyInstance, token: string): void {
  app.addHook('onRequest', async (req, reply) => {
    const url = new URL(req.url, 'http://ui');
    const given = url.searchParams.get('token');
    if (given !== null && sameToken(given, token)) {
      // Swap the token in the address bar (and in history) for a cookie scripts on the page cannot read.
      url.searchParams.delete('token');
      await reply
        .header('set-cookie', `${COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/`)
        .redirect(url.pathname + url.search, 303);
      return;
    }
    if (!sameToken(tokenOf(req), token)) await reply.code(401).send({ error: 'missing or wrong token' });
  });
}

export interface UiOptions {
  token?: string;
  /** Operator actions (pause, resume, cancel, retry); absent: read-only. */
  act?: Act;
}

export function buildUi(db: Db, options: UiOptions = {}): FastifyInstance {
  const app = Fastify({ logger: false });
  if (options.token) requireToken(app, options.token);
  registerApi(app, db, { actions: options.act !== undefined });
  registerActions(app, options.act);
  registerPages(app, async (id) => (await getRun(db, id)) !== undefined);
  return app;
}
