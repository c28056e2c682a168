import { runService } from '@duplex/shared';
import { buildApp } from './app.ts';
import { loadAgentConfig } from './config.ts';

await runService('duplex agent', async () => {
  const config = loadAgentConfig();
  const app = await buildApp({ config });
  return {
    app,
    host: config.AGENT_HOST,
    port: config.AGENT_PORT,
    afterListen: async () => {
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : config.AGENT_PORT;
      const url = `http://${config.AGENT_PUBLIC_HOST ?? config.AGENT_HOST}:${port}`;
      // A supervising cluster-manager learns the agent's URL over IPC, to broadcast changes to it.
      process.send?.({ type: 'listening', url });
      app.agent.start(url);
    },
  };
});
