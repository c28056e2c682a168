import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import { checkFirst, secretHash } from '@duplex/shared';
import type { ServerContext } from '../context.ts';
import { isRole, newTokenId, newTokenSecret } from '../lib/tokens.ts';
import { ensureAdminToken } from '../repositories/tokens.ts';
import type { Caller } from '../services/authenticator.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Whose token the request carries; set on every operation that names a role. */
    caller: Caller | null;
  }
}

/**
 * Users' API tokens and agents' credentials: makes sure an admin token exists, then checks the
 * token of every request to an operation that names a role (x-duplex-role), and the credential
 * of every agent request (x-duplex-caller: agent), before the body is read, so a request
 * without them is refused without parsing what it sent.
 */
export async function installAuthentication(app: FastifyInstance, context: ServerContext): Promise<void> {
  await ensureAdmin(context);
  app.decorateRequest('caller', null);
  // A hook on the routes that need it (added as each route is), so open routes pay nothing.
  app.addHook('onRoute', (route) => {
    const { role, callers = [], operationId } = (route.config ?? {}) as { role?: unknown; callers?: string[]; operationId?: string };
    let check: onRequestHookHandler | undefined;
    if (isRole(role)) {
      check = async (request) => {
        request.caller = await context.authenticator.authorize(request.headers.authorization, role, operationId ?? request.url, request.ip);
      };
    } else if (callers.includes('agent')) {
      // The agent's id is the path's: a credential speaks for its own agent only.
      check = async (request) => context.authenticator.authorizeAgent(request.headers.authorization, (request.params as { id?: string }).id ?? '', request.ip);
    }
    // A joining agent's token is checked against its storage system's, named in the body: see registerAgent.
    if (!check) return;
    checkFirst(route, check);
  });
}

/**
 * Records ADMIN_TOKEN (hashed) when it is new; without it, makes an admin token if the database
 * has none, and prints it once on standard error (never in the log, which keeps no secret).
 */
async function ensureAdmin(context: ServerContext): Promise<void> {
  const given = context.config.ADMIN_TOKEN;
  const secret = given ?? newTokenSecret();
  const made = await ensureAdminToken(
    context.db,
    { id: newTokenId(), name: given ? 'admin (ADMIN_TOKEN)' : 'admin (made at first start)', role: 'admin', secret_sha256: secretHash(secret), created_by: null, expires_at: null },
    given !== undefined,
  );
  if (made && !given) {
    process.stderr.write(
      `duplex server ${context.config.SERVER_ID}: no admin token existed, so one was made (${made.id}); it is shown this once:\n  ${secret}\n` +
        'Use it as "Authorization: Bearer <token>" to create other tokens (POST /v1/tokens), or set ADMIN_TOKEN.\n',
    );
  }
}
