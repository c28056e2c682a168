import {
  createDatabase,
  createServiceApp,
  databaseCheck,
  mountServiceContract,
  operationalHandlers,
  type Database,
} from '@duplex/shared';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { ServerConfig } from './config.ts';
import { createServerContext, type ServerContext } from './context.ts';
import { isRole, newTokenId, newTokenSecret, secretHash } from './lib/tokens.ts';
import { ensureAdminToken } from './repositories/tokens.ts';
import { renewServerLease } from './repositories/servers.ts';
import { expireIdempotencyKeys } from './repositories/tasks.ts';
import { agentHandlers } from './routes/agents.ts';
import { deviceHandlers } from './routes/devices.ts';
import { eventHandlers } from './routes/events.ts';
import { storageSystemHandlers } from './routes/storage-systems.ts';
import { taskHandlers } from './routes/tasks.ts';
import { tokenHandlers } from './routes/tokens.ts';
import type { Caller } from './services/authenticator.ts';
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
  interface FastifyRequest {
    /** Whose token the request carries; set on every operation that names a role. */
    caller: Caller | null;
  }
}

export async function buildApp(options: BuildServerOptions): Promise<FastifyInstance> {
  const { config } = options;
  const app = await createServiceApp({ service: `server-${config.SERVER_ID}`, contract: 'server', logger: options.logger });
  const db = options.db ?? createDatabase(config.DATABASE_URL, { poolMax: config.DATABASE_POOL_MAX, applicationName: `duplex-server-${config.SERVER_ID}` });
  const context = await createServerContext(config, db, app.log, app.metrics.registry, options.eventFeed);
  app.decorate('duplex', context);
  await ensureAdmin(context);

  // Before the body is read: a request without the role is refused without parsing what it sent.
  app.decorateRequest('caller', null);
  app.addHook('onRequest', async (request) => {
    const { role, operationId } = request.routeOptions.config as { role?: unknown; operationId?: string };
    if (!isRole(role)) return;
    request.caller = await context.authenticator.authorize(request.headers.authorization, role, operationId ?? request.url, request.ip);
  });

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

/**
 * Records ADMIN_TOKEN (hashed) when it is new; without it, makes an admin token if the database
 * has none, and prints it once on standard error (never in the log, which keeps no secret).
 */
async function ensureAdmin(context: ServerContext): Promise<void> {
  const given = context.config.ADMIN_TOKEN;
  const secret = given ?? newTokenSecret();
  const made = await ensureAdminToken(
    context.db,
    { id: newTokenId(), name: given ? 'admin (ADMIN_TOKEN)' : 'admin (made at first start)', role: 'admin', secret_sha256: secretHash(secret), created_by: null, expires_at: null },
    given !== undefined,
  );
  if (made && !given) {
    process.stderr.write(
      `duplex server ${context.config.SERVER_ID}: no admin token existed, so one was made (${made.id}); it is shown this once:\n  ${secret}\n` +
        'Use it as "Authorization: Bearer <token>" to create other tokens (POST /v1/tokens), or set ADMIN_TOKEN.\n',
    );
  }
}

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
