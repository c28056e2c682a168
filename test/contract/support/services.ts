import type { AddressInfo } from 'node:net';
import { buildApp as buildAgentApp, loadAgentConfig } from '@duplex/agent';
import { buildApp as buildClusterManagerApp, loadClusterManagerConfig } from '@duplex/cluster-manager';
import { buildApp as buildDriverApp, createExecutor, createMemoryStore, type DeviceLabel, type MemoryDeviceStore } from '@duplex/driver';
import { buildApp as buildServerApp, loadServerConfig } from '@duplex/server';
import type { Database } from '@duplex/shared';
import { injectWithToken, testAdminToken, testClusterToken, testJoinToken, testJoinTokens, testServiceToken } from '@duplex/testkit';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/** A Fastify instance as the services build it (fastify itself is not a dependency of test/). */
export type App = Awaited<ReturnType<typeof buildDriverApp>>;

/** What a test injects; every field is one light-my-request takes. */
export interface InjectRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD';
  url: string;
  headers?: Record<string, string | undefined>;
  payload?: string | Buffer | object;
}

/** What an injected request answers. */
export interface InjectResponse {
  statusCode: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
  json<T = unknown>(): T;
}

/**
 * Each builder returns an app that is not ready yet, so a test can still add hooks to it. Its
 * `inject` carries the credential its usual caller would (see injectWithToken). One driver
 * serves both clusters here, so every app of the contract tests shares one cluster token.
 */
export const contractClusterToken = testClusterToken('contract');

export async function driverApp(devices: readonly DeviceLabel[]): Promise<{ app: App; store: MemoryDeviceStore }> {
  const store = createMemoryStore(devices);
  const app = await buildDriverApp({ backend: createExecutor(store), clusterToken: contractClusterToken, logger: false });
  return { app: injectWithToken(app, contractClusterToken), store };
}

export async function serverApp(db: Database, databaseUrl: string, env: Record<string, string> = {}): Promise<App> {
  return injectWithToken(await buildServerApp({ config: loadServerConfig({ DATABASE_URL: databaseUrl, SERVER_ID: 'A', ADMIN_TOKEN: testAdminToken, JOIN_TOKENS: testJoinTokens, SERVICE_TOKEN: testServiceToken, ...env }), db, logger: false }));
}

export async function agentApp(env: Record<string, string> = {}): Promise<App> {
  const config = loadAgentConfig({
    AGENT_NAME: 'ss1-c1-A',
    SERVER_ID: 'A',
    SERVER_URL: 'http://127.0.0.1:9',
    STORAGE_SYSTEM_ID: 'ss1',
    CLUSTER_ID: 'c1',
    JOIN_TOKEN: testJoinToken,
    CLUSTER_TOKEN: contractClusterToken,
    DRIVER_URL: 'http://127.0.0.1:9',
    CLUSTER_MANAGER_URL: 'http://127.0.0.1:9',
    ...env,
  });
  return injectWithToken(await buildAgentApp({ config, logger: false }), contractClusterToken);
}

export async function clusterManagerApp(db: Database, databaseUrl: string, env: Record<string, string> = {}): Promise<App> {
  const config = loadClusterManagerConfig({
    DATABASE_URL: databaseUrl,
    STORAGE_SYSTEM_ID: 'ss1',
    CLUSTER_ID: 'c0',
    JOIN_TOKEN: testJoinToken,
    CLUSTER_TOKEN: contractClusterToken,
    SERVICE_TOKEN: testServiceToken,
    ...env,
  });
  return injectWithToken(await buildClusterManagerApp({ config, db, logger: false }), testServiceToken);
}

/** Listens on a free loopback port and returns the app's URL. */
export async function listen(app: App, port = 0): Promise<string> {
  await app.listen({ port, host: '127.0.0.1' });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}
