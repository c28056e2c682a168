import type { ServerApi } from '@duplex/contracts';
import { ProblemError, secretHash, type OperationHandlers } from '@duplex/shared';
import type { ServerContext } from '../context.ts';
import { newTokenId, newTokenSecret } from '../lib/tokens.ts';
import { insertToken, listTokens, revokeToken, type TokenRow } from '../repositories/tokens.ts';

type Ops = ServerApi.operations;
type Token = ServerApi.components['schemas']['Token'];

export function toTokenResource(row: TokenRow): Token {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    created_at: row.created_at.toISOString(),
    expires_at: row.expires_at?.toISOString() ?? null,
    revoked_at: row.revoked_at?.toISOString() ?? null,
  };
}

export function tokenHandlers(context: ServerContext): Pick<OperationHandlers<Ops>, 'createToken' | 'listTokens' | 'revokeToken'> {
  const { db } = context;
  return {
    async createToken(request, reply) {
      const { name, role, expires_in_s: expiresInS } = request.body;
      const secret = newTokenSecret();
      const row = await insertToken(db, {
        id: newTokenId(),
        name,
        role,
        secret_sha256: secretHash(secret),
        created_by: request.caller?.id ?? null,
        expires_at: expiresInS === undefined ? null : new Date(Date.now() + expiresInS * 1000),
      });
      request.log.info({ token_id: row.id, role, created_by: row.created_by }, 'API token created');
      reply.code(201);
      return { ...toTokenResource(row), secret };
    },
    async listTokens(request) {
      const { limit = 50, cursor } = request.query;
      const page = await listTokens(db, limit, cursor);
      return { items: page.items.map(toTokenResource), next_cursor: page.next_cursor };
    },
    async revokeToken(request) {
      const row = await revokeToken(db, request.params.id);
      if (!row) throw new ProblemError('token-not-found', `there is no API token '${request.params.id}'`);
      context.authenticator.forget();
      request.log.info({ token_id: row.id, revoked_by: request.caller?.id }, 'API token revoked');
      return toTokenResource(row);
    },
  };
}
