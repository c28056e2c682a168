import {
  createDatabase,
  createServiceApp,
  loadTls,
  databaseCheck,
  mountServiceContract,
  operationalHandlers,
  refuseUnstorableText,
  type Database,
} from '@duplex/shared';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { ServerConfig } from './config.ts';
import { createServerContext, type ServerContext } from './context.ts';
import { installAuthentication } from './plugins/authentication.ts';
import { installConsole } from './plugins/console.ts';
import { renewServerLease } from './repositories/servers.ts';
import { expireIdempotencyKeys } from './repositories/tasks.ts';
import { agentHandlers } from './routes/agents.ts';
import { deviceHandlers } from './routes/devices.ts';
import { eventHandlers } from './routes/events.ts';
import { storageSystemHandlers } from './routes/storage-systems.ts';
import { taskHandlers } from './routes/tasks.ts';
import { tokenHandlers } from './routes/tokens.ts';
import type { EventFeedOptions } from './services/event-feed.ts';
import { FailoverWatcher } from './services/failover-watcher.ts';

export interface BuildServerOptions {
  config: ServerConfig;
  /** A database to use instead of opening one from DATABASE_URL; the caller closes it. */
  db?: Database;
  logger?: FastifyServerOptions['logger'];
  /** Timings and limits of GET /v1/events, to override the defaults (tests). */
  eventFeed?: Partial<EventFeedOptions>;
}

declare module 'fastify' {
  interface FastifyInstance {
    duplex: ServerContext;
  }
}

export async function buildApp(options: BuildServerOptions): Promise<FastifyInstance> {
  const { config } = options;
  const app = await createServiceApp({
    service: `server-${config.SERVER_ID}`,
    contract: 'server',
    logger: options.logger,
    tls: loadTls(config),
    // Users browse every contract here, the cluster's own processes' too.
    docs: { alsoContracts: ['agent', 'cluster-manager', 'driver'] },
  });
  // Postgres text and jsonb hold neither U+0000 nor unpaired surrogates: such input is a 400, not a 500 from the database.
  app.addHook('preValidation', async (request) => refuseUnstorableText(request));
  const db = options.db ?? createDatabase(config.DATABASE_URL, { poolMax: config.DATABASE_POOL_MAX, applicationName: `duplex-server-${config.SERVER_ID}` });
  const context = await createServerContext(config, db, app.log, app.metrics.registry, options.eventFeed);
  app.decorate('duplex', context);
  await installAuthentication(app, context);
  installConsole(app);

  const leaseKeeper = startLeaseKeeper(context, app);
  const failoverWatcher = new FailoverWatcher(context, app.log);
  const keyExpiry = setInterval(() => void expireKeys(context, app), keyExpiryIntervalMs);
  keyExpiry.unref();
  // Event streams end before the connections are closed, so clients read why and reconnect.
  app.addHook('preClose', () => context.events.close());
  app.addHook('onClose', async () => {
    clearInterval(leaseKeeper);
    clearInterval(keyExpiry);
    failoverWatcher.close();
    await context.dispatcher.close();
    if (!options.db) await db.destroy();
  });

  mountServiceContract(app, 'server', {
    ...operationalHandlers('server', async () => ({
      database: await databaseCheck(db),
      lease: context.lease.expiresAt > Date.now() ? 'ok' : 'not held',
    })),
    ...agentHandlers(context),
    ...taskHandlers(context),
    ...storageSystemHandlers(context),
    ...deviceHandlers(context),
    ...eventHandlers(context),
    ...tokenHandlers(context),
  });
  app.addHook('onReady', async () => {
    await renewLease(context, app);
    context.dispatcher.kick();
    context.events.start();
    void expireKeys(context, app);
  });
  return app;
}

const keyExpiryIntervalMs = 10 * 60_000;

async function expireKeys(context: ServerContext, app: FastifyInstance): Promise<void> {
  try {
    const expired = await expireIdempotencyKeys(context.db, context.config.IDEMPOTENCY_KEY_TTL_HOURS);
    if (expired > 0) app.log.info({ expired }, 'idempotency keys expired');
  } catch (error) {
    app.log.warn({ err: error }, 'could not expire idempotency keys');
  }
}

async function renewLease(context: ServerContext, app: FastifyInstance): Promise<void> {
  context.metrics.noticeOwnLease(context.lease.expiresAt, Date.now());
  try {
    const expiresAt = await renewServerLease(
      context.db,
      { id: context.config.SERVER_ID, url: context.config.SERVER_PUBLIC_URL, instanceId: context.instance.id, startedAt: context.instance.startedAt },
      context.config.SERVER_LEASE_TTL_MS,
    );
    context.lease.expiresAt = expiresAt.getTime();
  } catch (error) {
    app.log.warn({ err: error }, 'could not renew the server lease');
  }
}

function startLeaseKeeper(context: ServerContext, app: FastifyInstance): NodeJS.Timeout {
  const timer = setInterval(() => void renewLease(context, app), Math.max(50, Math.floor(context.config.SERVER_LEASE_TTL_MS / 3)));
  timer.unref();
  return timer;
}
