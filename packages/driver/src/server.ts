import { defaultLogger, loadConfig, loadTls, runService } from '@duplex/shared';
import { buildApp } from './app.ts';
import { backendOptionsFromConfig, driverConfigSchema } from './config.ts';
import { createBackend } from './lib/backend.ts';

await runService('driver', async () => {
  const config = loadConfig(driverConfigSchema);
  const backend = createBackend(backendOptionsFromConfig(config));
  const logger = defaultLogger('driver');
  const app = await buildApp({
    backend,
    clusterToken: config.CLUSTER_TOKEN,
    tls: loadTls(config),
    authFailures: { limit: config.AUTH_FAILURE_LIMIT, windowMs: config.AUTH_FAILURE_WINDOW_MS },
    probeIntervalMs: config.DRIVER_PROBE_INTERVAL_MS,
    logger:
      typeof logger === 'object'
        ? { ...logger, base: { ...logger.base, storage_system: config.STORAGE_SYSTEM_ID, cluster: config.DRIVER_CLUSTER_ID } }
        : logger,
  });
  return {
    app,
    host: config.DRIVER_HOST,
    port: config.DRIVER_PORT,
    afterListen: async (address) => {
      app.log.info({ address, backend: config.DRIVER_BACKEND }, 'driver listening');
    },
  };
});
