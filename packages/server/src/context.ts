import { randomUUID } from 'node:crypto';
import type { Database, Registry } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { ServerConfig } from './config.ts';
import { parseJoinTokens } from './lib/agent-credentials.ts';
import { AgentRegistry } from './lib/agent-registry.ts';
import { InventoryView } from './lib/inventory-view.ts';
import { ServerMetrics } from './metrics.ts';
import { agentsOfServer, storedCredentials } from './repositories/agents.ts';
import { loadServerInventories } from './repositories/inventories.ts';
import { Authenticator } from './services/authenticator.ts';
import { Dispatcher } from './services/dispatcher.ts';
import { defaultEventFeedOptions, EventFeed, type EventFeedOptions } from './services/event-feed.ts';
import { TaskService } from './services/task-service.ts';

/** What the routes of a server share: its database, its registry of agents, its inventory view. */
export interface ServerContext {
  config: ServerConfig;
  db: Database;
  agents: AgentRegistry;
  inventory: InventoryView;
  tasks: TaskService;
  dispatcher: Dispatcher;
  metrics: ServerMetrics;
  /** The event outbox as a live stream, fanned out to this server's subscribers. */
  events: EventFeed;
  /** Users' API tokens, checked for every operation that names a role. */
  authenticator: Authenticator;
  lease: { expiresAt: number };
  /** This process, as recorded in its lease row. */
  instance: { id: string; startedAt: Date };
}

/** Rebuilds the in-memory registry and view from Postgres, so a restarted server routes at once. */
export async function createServerContext(config: ServerConfig, db: Database, log: FastifyBaseLogger, registry: Registry, eventFeed: Partial<EventFeedOptions> = {}): Promise<ServerContext> {
  const agents = new AgentRegistry();
  const inventory = new InventoryView();
  const metrics = new ServerMetrics(registry, { db, inventory, log });
  for (const row of await agentsOfServer(db, config.SERVER_ID)) {
    agents.upsert({
      id: row.id,
      storage_system_id: row.storage_system_id,
      cluster_id: row.cluster_id,
      url: row.url,
      incarnation: row.incarnation,
      leaseExpiresAt: row.lease_expires_at.getTime(),
      credentials: storedCredentials(row),
    });
  }
  for (const view of await loadServerInventories(db, config.SERVER_ID)) inventory.apply(view);
  const lease = { expiresAt: 0 };
  const dispatcher = new Dispatcher({
    lease,
    db,
    serverId: config.SERVER_ID,
    agents,
    inventory,
    log,
    batchSize: config.DISPATCH_BATCH_SIZE,
    retryMs: config.DISPATCH_RETRY_MS,
    metrics,
  });
  return {
    config,
    db,
    agents,
    inventory,
    tasks: new TaskService(db, config.SERVER_ID, inventory, config.IDEMPOTENCY_KEY_TTL_HOURS, metrics),
    dispatcher,
    metrics,
    events: new EventFeed(db, { ...defaultEventFeedOptions, ...eventFeed }, log, {
      connectionString: config.DATABASE_URL,
      applicationName: `duplex-server-${config.SERVER_ID}-events`,
    }),
    authenticator: new Authenticator(db, agents, parseJoinTokens(config.JOIN_TOKENS), { cacheMs: config.TOKEN_CACHE_MS, failureLimit: config.AUTH_FAILURE_LIMIT, failureWindowMs: config.AUTH_FAILURE_WINDOW_MS }),
    lease,
    instance: { id: randomUUID(), startedAt: new Date() },
  };
}
