import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.ts';
import { isRole, newTokenId, newTokenSecret, secretHash } from '../lib/tokens.ts';
import { ensureAdminToken } from '../repositories/tokens.ts';
import type { Caller } from '../services/authenticator.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Whose token the request carries; set on every operation that names a role. */
    caller: Caller | null;
  }
}

/**
 * Users' API tokens: makes sure an admin token exists, then checks the token of every request
 * to an operation that names a role (x-duplex-role), before its body is read, so a request
 * without the role is refused without parsing what it sent.
 */
export async function installAuthentication(app: FastifyInstance, context: ServerContext): Promise<void> {
  await ensureAdmin(context);
  app.decorateRequest('caller', null);
  app.addHook('onRequest', async (request) => {
    const { role, operationId } = request.routeOptions.config as { role?: unknown; operationId?: string };
    if (!isRole(role)) return;
    request.caller = await context.authenticator.authorize(request.headers.authorization, role, operationId ?? request.url, request.ip);
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
