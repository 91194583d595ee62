/**
 * Operator buttons: `POST /api/runs/<id>/actions/<pause|resume|cancel|retry>`. Only with
 * `operaflow ui --allow-actions`; otherwise every action is refused with 403 and the pages show no
 * buttons. A request must carry `x-operaflow-action: 1`: a custom header forces the browser's CORS
 * preflight, so another site cannot make a visitor's browser post an action.
 */
import type { FastifyInstance } from 'fastify';

export const ACTIONS = ['pause', 'resume', 'cancel', 'retry'] as const;
export type Action = (typeof ACTIONS)[number];
/** Carries out `action` on the run as `who`; returns what was done, in a line (scripts/cli/control.ts). */
export type Act = (action: Action, runId: string, who: string) => Promise<string>;

export function registerActions(app: FastifyInstance, act: Act | undefined): void {
  app.post<{ Params: { id: string; action: string } }>('/api/runs/:id/actions/:action', async (req, reply) => {
    if (!act)
      return reply.code(403).send({ error: 'read-only: start the dashboard with operaflow ui --allow-actions' });
    const action = req.params.action as Action;
    if (!ACTIONS.includes(action))
      return reply.code(404).send({ error: `unknown action "${req.params.action}" (${ACTIONS.join(', ')})` });
    if (req.headers['x-operaflow-action'] !== '1')
      return reply.code(400).send({ error: 'actions need the header x-operaflow-action: 1' });
    try {
      return { message: await act(action, req.params.id, `ui@${req.ip}`) };
    } catch (err) {
      return reply.code(409).send({ error: (err as Error).message });
    }
  });
}
