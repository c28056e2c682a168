import { randomBytes, timingSafeEqual } from 'node:crypto';
import { secretHash } from '@duplex/shared';

/** A credential an agent holds: stored as its hash, valid until `expiresAt` (ms). */
export interface StoredCredential {
  sha256: string;
  expiresAt: number;
}

export function newAgentCredential(ttlMs: number, now = Date.now()): { secret: string; stored: StoredCredential } {
  const secret = `dpa_${randomBytes(32).toString('base64url')}`;
  return { secret, stored: { sha256: secretHash(secret), expiresAt: now + ttlMs } };
}

/** Whether a presented secret is one of the agent's unexpired credentials; compared in constant time. */
export function matchesCredential(presentedSha256: string, held: readonly StoredCredential[], now = Date.now()): boolean {
  const presented = Buffer.from(presentedSha256, 'hex');
  let matched = false;
  for (const credential of held) {
    const candidate = Buffer.from(credential.sha256, 'hex');
    // Every held credential is compared, so the time taken does not tell which one matched.
    if (candidate.length === presented.length && timingSafeEqual(candidate, presented) && credential.expiresAt > now) matched = true;
  }
  return matched;
}

/** A credential is replaced once half its life is gone, so the agent always holds one with time left. */
export function dueForRotation(current: StoredCredential | undefined, ttlMs: number, now = Date.now()): boolean {
  return current === undefined || current.expiresAt - now < ttlMs / 2;
}

/**
 * The join tokens of JOIN_TOKENS ("ss1=<token>,ss2=<token>", and "*=<token>" for the storage
 * systems not named), by storage system. A token holds no comma or equals sign; the
 * configuration schema checks the shape.
 */
export function parseJoinTokens(value: string | undefined): Map<string, string> {
  const tokens = new Map<string, string>();
  for (const entry of (value ?? '').split(',').filter(Boolean)) {
    const at = entry.indexOf('=');
    tokens.set(entry.slice(0, at), entry.slice(at + 1));
  }
  return tokens;
}

/** The join token a storage system's agents must present: its own, or the one for all others ("*"). */
export function joinTokenFor(tokens: ReadonlyMap<string, string>, storageSystemId: string): string | undefined {
  return tokens.get(storageSystemId) ?? tokens.get('*');
}
