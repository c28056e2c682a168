import type { FastifyInstance, InjectOptions } from 'fastify';

/** The admin token the tests' servers are started with (ADMIN_TOKEN); never used outside tests. */
export const testAdminToken = 'dpx_test-admin-token-for-duplex-tests-only';

export const bearer = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` });

/**
 * Makes `app.inject` send `token` unless a request names its own `authorization`; a request
 * with `authorization: undefined` goes without one. Tests of other things then need not
 * repeat the header, and the tests of authorization still say exactly what they send.
 */
export function injectWithToken(app: FastifyInstance, token = testAdminToken): FastifyInstance {
  const inject = app.inject.bind(app) as (options: InjectOptions) => ReturnType<FastifyInstance['inject']>;
  const withToken = (options: InjectOptions) => {
    const headers: Record<string, unknown> = { ...(options.headers ?? {}) };
    if (!('authorization' in headers)) Object.assign(headers, bearer(token));
    else if (headers.authorization === undefined) delete headers.authorization;
    return inject({ ...options, headers: headers as InjectOptions['headers'] });
  };
  app.inject = withToken as FastifyInstance['inject'];
  return app;
}
