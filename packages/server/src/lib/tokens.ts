import { randomBytes } from 'node:crypto';
import { randomHex } from '@duplex/shared';

export type Role = 'viewer' | 'operator' | 'admin';

/** Each role may do what the roles before it may. */
const roleRank: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };

export const isRole = (value: unknown): value is Role => typeof value === 'string' && value in roleRank;

/** Whether a token of role `has` may call an operation that needs `needs`. */
export function allows(has: Role, needs: Role): boolean {
  return roleRank[has] >= roleRank[needs];
}

/** A new token's secret: 256 random bits, with a prefix that tells a duplex token in a leaked text. */
export function newTokenSecret(): string {
  return `dpx_${randomBytes(32).toString('base64url')}`;
}

/** Token ids sort by creation time, so a list is newest first by id alone. */
export function newTokenId(now = Date.now()): string {
  return `tok_${now.toString(36).padStart(9, '0')}${randomHex(6)}`;
}
