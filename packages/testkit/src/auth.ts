import { bearer } from '@duplex/shared';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';

/** The admin token the tests' servers are started with (ADMIN_TOKEN); never used outside tests. */
export const testAdminToken = 'dpx_test-admin-token-for-duplex-tests-only';

/** The join token of every storage system in the tests (JOIN_TOKENS of the servers, JOIN_TOKEN of the rest). */
export const testJoinToken = 'dpj_test-join-token-for-duplex-tests-only';
export const testJoinTokens = `*=${testJoinToken}`;

/** The control plane's token of the tests' servers and cluster-managers (SERVICE_TOKEN). */
export const testServiceToken = 'dps_test-service-token-for-duplex-tests-only';

/** A cluster's token in the tests (CLUSTER_TOKEN of its cluster-manager, driver and agents): each cluster has its own. */
export const testClusterToken = (clusterId = 'c0'): string => `dpc_test-cluster-token-of-${clusterId}-for-duplex-tests-only`;

/** A path segment decoded, or as it is when it is not valid percent-encoding (a test of bad input). */
const decoded = (segment: string): string => {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
};

export { bearer };

/**
 * Makes `app.inject` send what a well-behaved caller would, unless a request names its own
 * `authorization` (`authorization: undefined` sends none): the tests' join token with an
 * agent's registration, the credential the registration (or a heartbeat's rotation) answered
 * with on that agent's own requests, and `token` on everything else. Tests of other things then
 * need not repeat the headers, and the tests of authentication still say exactly what they send.
 */
export function injectWithToken(app: FastifyInstance, token = testAdminToken): FastifyInstance {
  const inject = app.inject.bind(app) as (options: InjectOptions) => Promise<LightMyRequestResponse>;
  const credentials = new Map<string, string>();
  const withToken = async (options: InjectOptions) => {
    const headers: Record<string, unknown> = { ...(options.headers ?? {}) };
    const path = String(options.url ?? options.path ?? '').split('?')[0] ?? '';
    const agentPath = /^\/v1\/agents\/([^/]+)\/(heartbeats|inventory|task-reports)$/.exec(path);
    const registration = options.method === 'POST' && path === '/v1/agents';
    if (!('authorization' in headers)) {
      if (registration) Object.assign(headers, bearer(testJoinToken));
      else if (agentPath) {
        const credential = credentials.get(decoded(agentPath[1]!));
        if (credential) Object.assign(headers, bearer(credential));
      } else Object.assign(headers, bearer(token));
    } else if (headers.authorization === undefined) delete headers.authorization;
    const response = await inject({ ...options, headers: headers as InjectOptions['headers'] });
    if ((registration || agentPath?.[2] === 'heartbeats') && response.statusCode < 300) {
      const body = response.json<{ id?: string; credential?: string }>();
      const id = registration ? body.id : decoded(agentPath![1]!);
      if (id && body.credential) credentials.set(id, body.credential);
    }
    return response;
  };
  app.inject = withToken as unknown as FastifyInstance['inject'];
  return app;
}
