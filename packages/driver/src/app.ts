import type { DriverApi } from '@duplex/contracts';
import { authFailureVariables, createServiceApp, mountServiceContract, operationalHandlers, secretIs, type OperationHandlers, type ServiceTls } from '@duplex/shared';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { DeviceWatch, describeChanges } from './lib/device-watch.ts';
import type { DriverBackend } from './lib/types.ts';
import { DriverMetrics } from './metrics.ts';
import { deviceHandlers } from './routes/devices.ts';
import { executionHandlers } from './routes/executions.ts';

export interface BuildAppOptions {
  backend: DriverBackend;
  /** The cluster's token (CLUSTER_TOKEN): every device operation must carry it. */
  clusterToken: string;
  /** HTTPS to serve with (loadTls); plain HTTP when omitted. */
  tls?: ServiceTls;
  /** Failed authentications one address may have per window (AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW_MS); their defaults when omitted. */
  authFailures?: { limit: number; windowMs: number };
  /** Pino options, or false to log nothing (tests); the shared default when omitted. */
  logger?: FastifyServerOptions['logger'];
  /** How often the devices are probed for changes; 500 ms when omitted. */
  probeIntervalMs?: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    deviceWatch: DeviceWatch;
  }
}

/** The driver's HTTP API over a backend, ready for `inject` or `listen`. */
export async function buildApp(options: BuildAppOptions): Promise<FastifyInstance> {
  const { AUTH_FAILURE_LIMIT: limit, AUTH_FAILURE_WINDOW_MS: window } = authFailureVariables;
  const app = await createServiceApp({
    service: 'driver',
    contract: 'driver',
    logger: options.logger,
    tls: options.tls,
    credentials: {
      checks: { cluster: secretIs(options.clusterToken) },
      failureLimit: options.authFailures?.limit ?? limit.default,
      failureWindowMs: options.authFailures?.windowMs ?? window.default,
    },
  });
  const watch = new DeviceWatch(
    options.backend,
    options.probeIntervalMs ?? 500,
    (snapshot, previous) => app.log.warn({ generation: snapshot.generation, changes: describeChanges(previous, snapshot.devices) }, 'the devices changed'),
    (error) => app.log.warn({ err: (error as Error).message }, 'the devices cannot be probed'),
  );
  app.decorate('deviceWatch', watch);
  app.addHook('onReady', async () => watch.start());
  // Long polls answer at once on close, so shutdown does not wait for them.
  app.addHook('preClose', async () => watch.stop());
  const handlers: OperationHandlers<DriverApi.operations> = {
    ...operationalHandlers('driver', () => options.backend.readiness()),
    ...deviceHandlers(options.backend, watch),
    ...executionHandlers(options.backend, new DriverMetrics(app.metrics.registry)),
  };
  mountServiceContract(app, 'driver', handlers);
  return app;
}
