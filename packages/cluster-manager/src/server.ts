import { runService } from '@duplex/shared';
import { buildApp } from './app.ts';
import { loadClusterManagerConfig } from './config.ts';

await runService('duplex cluster-manager', async () => {
  const config = loadClusterManagerConfig();
  const app = await buildApp({ config });
  return { app, host: config.CM_HOST, port: config.CM_PORT, afterListen: () => app.clusterManager.start() };
});
