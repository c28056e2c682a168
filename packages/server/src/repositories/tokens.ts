import { decodeCursor, encodeCursor, type Database, type Queryable } from '@duplex/shared';
import type { Role } from '../lib/tokens.ts';

export interface TokenRow {
  id: string;
  name: string;
  role: Role;
  secret_sha256: string;
  created_by: string | null;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
}

export type NewToken = Pick<TokenRow, 'id' | 'name' | 'role' | 'secret_sha256' | 'created_by' | 'expires_at'>;

export async function insertToken(db: Queryable, token: NewToken): Promise<TokenRow> {
  const [row] = await db<TokenRow>('api_tokens').insert(token).returning('*');
  return row!;
}

/** Tokens that are neither revoked nor expired. */
function usableTokens(db: Queryable) {
  return db<TokenRow>('api_tokens')
    .whereNull('revoked_at')
    .where((query) => query.whereNull('expires_at').orWhere('expires_at', '>', db.fn.now()));
}

/** The token a secret's hash names, while it is neither revoked nor expired. */
export async function findUsableToken(db: Queryable, secretSha256: string): Promise<TokenRow | undefined> {
  return usableTokens(db).where({ secret_sha256: secretSha256 }).first();
}

/** Newest first (ids sort by creation time). */
export async function listTokens(db: Queryable, limit: number, cursor: string | undefined): Promise<{ items: TokenRow[]; next_cursor: string | null }> {
  const query = db<TokenRow>('api_tokens');
  if (cursor !== undefined) query.where('id', '<', String(decodeCursor(cursor, 1)[0]));
  const rows = await query.orderBy('id', 'desc').limit(limit + 1);
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return { items, next_cursor: rows.length > limit && last ? encodeCursor([last.id]) : null };
}

/** Revokes a token (once: a revoked token keeps its first revocation time). */
export async function revokeToken(db: Queryable, id: string): Promise<TokenRow | undefined> {
  const [row] = await db<TokenRow>('api_tokens')
    .where({ id })
    .update({ revoked_at: db.raw('coalesce(revoked_at, now())') as unknown as Date })
    .returning('*');
  return row;
}

/**
 * Makes sure an admin token exists at start: the given one (ADMIN_TOKEN) is recorded unless its
 * hash is known, or, without one, a new token is made when no usable admin token exists. Servers
 * starting together on a new database make one between them (a transaction-scoped advisory lock).
 * Returns the row it created, if any.
 */
export async function ensureAdminToken(db: Database, made: NewToken, given: boolean): Promise<TokenRow | undefined> {
  return db.transaction(async (trx) => {
    await trx.raw(`select pg_advisory_xact_lock(hashtext('duplex.api_tokens.bootstrap'))`);
    if (given) {
      const known = await trx<TokenRow>('api_tokens').where({ secret_sha256: made.secret_sha256 }).first();
      return known ? undefined : insertToken(trx, made);
    }
    const admin = await usableTokens(trx).where({ role: 'admin' }).first();
    return admin ? undefined : insertToken(trx, made);
  });
}
