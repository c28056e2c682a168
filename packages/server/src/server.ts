import { runService } from '@duplex/shared';
import { buildApp } from './app.ts';
import { loadServerConfig } from './config.ts';

await runService('duplex server', async () => {
  const config = loadServerConfig();
  const app = await buildApp({ config });
  return { app, host: config.SERVER_HOST, port: config.SERVER_PORT };
});
