import type { DriverApi } from '@duplex/contracts';
import { createServiceApp, mountServiceContract, operationalHandlers, type OperationHandlers } from '@duplex/shared';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { DriverBackend } from './lib/types.ts';
import { deviceHandlers } from './routes/devices.ts';
import { executionHandlers } from './routes/executions.ts';

export interface BuildAppOptions {
  backend: DriverBackend;
  /** Pino options, or false to log nothing (tests); the shared default when omitted. */
  logger?: FastifyServerOptions['logger'];
}

/** The driver's HTTP API over a backend, ready for `inject` or `listen`. */
export async function buildApp(options: BuildAppOptions): Promise<FastifyInstance> {
  const app = await createServiceApp({ service: 'driver', contract: 'driver', logger: options.logger });
  const handlers: OperationHandlers<DriverApi.operations> = {
    ...operationalHandlers('driver', () => options.backend.readiness()),
    ...deviceHandlers(options.backend),
    ...executionHandlers(options.backend),
  };
  mountServiceContract(app, 'driver', handlers);
  return app;
}
