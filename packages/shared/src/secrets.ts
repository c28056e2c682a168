import { hash, timingSafeEqual } from 'node:crypto';

/**
 * What is stored or compared of a secret. A plain SHA-256 suffices, and a lookup by it is
 * safe, because a secret is random and long (or, when an operator chose it, at least 32
 * characters): there is nothing to guess by trying hashes, and no secret is ever compared in
 * the clear.
 */
export function secretHash(secret: string): string {
  // The one-shot form: every authenticated request (each heartbeat among them) hashes its secret.
  return hash('sha256', secret, 'hex');
}

/** The token of an `Authorization: Bearer <token>` header, or undefined for anything else. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string' || header.length > 600) return undefined;
  const match = /^Bearer +([\x21-\x7E]+) *$/i.exec(header);
  return match?.[1];
}

/** Whether `given` is the secret `expected`, compared in constant time (hashes of equal length). */
export function sameSecret(given: string, expected: string | undefined): boolean {
  if (expected === undefined) return false;
  return timingSafeEqual(Buffer.from(secretHash(given), 'hex'), Buffer.from(secretHash(expected), 'hex'));
}

/** The header that carries a secret as a bearer token. */
export const bearer = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` });

/** The variables that carry secrets (or the database's address, credentials included). */
const secretVariables = ['DATABASE_URL', 'ADMIN_TOKEN', 'SERVICE_TOKEN', 'CLUSTER_TOKEN', 'JOIN_TOKEN', 'JOIN_TOKENS'];

/**
 * An environment to pass on to a child process without its secrets: a launcher then names
 * each secret a child needs, so no process holds another's (an agent never sees the control
 * plane's token, a driver never sees the database).
 */
export function withoutSecrets(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const passed = { ...env };
  for (const name of secretVariables) delete passed[name];
  return passed;
}
