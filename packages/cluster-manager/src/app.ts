import type { ClusterManagerApi } from '@duplex/contracts';
import {
  createDatabase,
  createServiceApp,
  loadTls,
  secretIs,
  databaseCheck,
  mountServiceContract,
  operationalHandlers,
  ProblemError,
  refuseUnstorableText,
  type Database,
  type OperationHandlers,
} from '@duplex/shared';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { ClusterManagerConfig } from './config.ts';
import { ClusterManagerMetrics } from './metrics.ts';
import { agentIdentities, currentVersion, latestInventory } from './repositories/cluster-store.ts';
import { ClusterManager } from './services/cluster-manager.ts';

export interface BuildClusterManagerOptions {
  config: ClusterManagerConfig;
  db?: Database;
  logger?: FastifyServerOptions['logger'];
}

declare module 'fastify' {
  interface FastifyInstance {
    clusterManager: ClusterManager;
  }
}

export async function buildApp(options: BuildClusterManagerOptions): Promise<FastifyInstance> {
  const { config } = options;
  const app = await createServiceApp({
    service: `cluster-manager-${config.STORAGE_SYSTEM_ID}-${config.CLUSTER_ID}`,
    contract: 'cluster-manager',
    logger: options.logger,
    tls: loadTls(config),
    // Its agents call with the cluster's token; servers and the peer cluster-manager with the control plane's.
    credentials: {
      checks: { cluster: secretIs(config.CLUSTER_TOKEN), service: secretIs(config.SERVICE_TOKEN) },
      failureLimit: config.AUTH_FAILURE_LIMIT,
      failureWindowMs: config.AUTH_FAILURE_WINDOW_MS,
    },
  });
  // Postgres text and jsonb hold neither U+0000 nor unpaired surrogates: such input is a 400, not a 500 from the database.
  app.addHook('preValidation', async (request) => refuseUnstorableText(request));
  const db = options.db ?? createDatabase(config.DATABASE_URL, { poolMax: 5, applicationName: `duplex-cm-${config.CLUSTER_ID}` });
  const metrics = new ClusterManagerMetrics(app.metrics.registry, { storageSystemId: config.STORAGE_SYSTEM_ID, clusterId: config.CLUSTER_ID }, (): number | undefined => manager.inventory?.version);
  const manager = new ClusterManager(config, db, app.log, metrics);
  app.decorate('clusterManager', manager);
  app.addHook('onClose', async () => {
    await manager.stop();
    if (!options.db) await db.destroy();
  });

  const handlers: OperationHandlers<ClusterManagerApi.operations> = {
    ...operationalHandlers('cluster-manager', async () => ({
      database: await databaseCheck(db),
      inventory: manager.inventory ? 'ok' : 'not yet stored',
    })),
    async getInventory(request, reply) {
      const etagOf = (version: number) => `"${config.CLUSTER_ID}-v${version}"`;
      const held = request.headers['if-none-match'];
      if (held !== undefined) {
        const version = await currentVersion(db, config.STORAGE_SYSTEM_ID, config.CLUSTER_ID);
        if (version !== undefined && version > 0 && held === etagOf(version)) return reply.code(304).send();
      }
      const inventory = await latestInventory(db, config.STORAGE_SYSTEM_ID, config.CLUSTER_ID);
      if (!inventory) throw new ProblemError('not-ready', 'the inventory has not been stored yet');
      return reply.header('etag', etagOf(inventory.version)).send(inventory);
    },
    async addDevice(request, reply) {
      const inventory = await manager.addDevice(request.body.id, request.body.capacity_bytes);
      return reply.code(201).send(inventory);
    },
    async setDeviceState(request) {
      return manager.setDeviceState(request.params.id, request.body.state, request.body.reason);
    },
    async retireDevice(request) {
      return manager.retireDevice(request.params.id);
    },
    async refreshInventory() {
      return manager.refreshInventory('refresh requested');
    },
    async failBack() {
      return manager.failBack();
    },
    async listAgentProcesses() {
      const stored = await agentIdentities(db, config.STORAGE_SYSTEM_ID, config.CLUSTER_ID);
      const configured = new Set(config.servers.map((server) => server.id));
      return {
        items: stored
          .filter((identity) => configured.has(identity.server_id))
          .map((identity) => ({ ...identity, started_at: identity.started_at.toISOString() })),
      };
    },
  };
  mountServiceContract(app, 'cluster-manager', handlers);
  return app;
}
