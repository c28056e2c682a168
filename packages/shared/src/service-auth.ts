import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, onRequestHookHandler, RouteOptions } from 'fastify';
import type { AuthFailures } from './auth-failures.ts';
import { ProblemError } from './problem.ts';
import { bearerToken, secretHash } from './secrets.ts';

/** Whether a presented secret is a caller's credential. */
export type CredentialCheck = (secret: string) => boolean;

/**
 * A check for a secret held in configuration (CLUSTER_TOKEN, SERVICE_TOKEN), in constant time;
 * the expected secret's digest is taken once, not at every request.
 */
export function secretIs(expected: string): CredentialCheck {
  const expectedDigest = Buffer.from(secretHash(expected), 'hex');
  return (secret) => timingSafeEqual(Buffer.from(secretHash(secret), 'hex'), expectedDigest);
}

/**
 * Service-to-service authentication: an operation whose contract names callers
 * (x-duplex-caller) is refused (401) unless its bearer token is the credential of one of those
 * callers that this service knows (`checks`, by caller name). Checked in a route hook before
 * the body is read. Callers this service has no check for are left to other hooks (the
 * server's agents, for instance); an operation that names none is open. Refusals count against
 * the caller's address in `failures`; an address past its limit is answered 429.
 */
export function installServiceAuthentication(app: FastifyInstance, checks: Record<string, CredentialCheck>, failures: AuthFailures): void {
  app.addHook('onRoute', (route) => {
    const callers = ((route.config ?? {}) as { callers?: string[] }).callers ?? [];
    const known = callers.filter((caller) => checks[caller] !== undefined);
    if (known.length === 0) return;
    const accepted = known.map((caller) => checks[caller]!);
    const expected = known.join(' or ');
    const check: onRequestHookHandler = async (request) => {
      failures.refuseIfBlocked(request.ip);
      const secret = bearerToken(request.headers.authorization);
      if (secret !== undefined && accepted.some((accepts) => accepts(secret))) return;
      failures.fail(request.ip);
      if (secret === undefined) throw new ProblemError('unauthenticated', `this operation needs the credential of its caller (${expected}) as a bearer token`);
      throw new ProblemError('unauthenticated', `the bearer token is not a credential of ${expected}`);
    };
    checkFirst(route, check);
  });
}

/** Makes `check` the first onRequest hook of a route being added (from an onRoute hook), before the body is read. */
export function checkFirst(route: RouteOptions, check: onRequestHookHandler): void {
  const existing = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest];
  route.onRequest = [check, ...existing];
}
