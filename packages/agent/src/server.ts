import { runService } from '@duplex/shared';
import { buildApp } from './app.ts';
import { loadAgentConfig } from './config.ts';

await runService('duplex agent', async () => {
  const config = loadAgentConfig();
  const app = await buildApp({ config });
  process.on('message', (message: unknown) => {
    const { type, fenced } = (message ?? {}) as { type?: unknown; fenced?: unknown };
    if (type === 'fence' && typeof fenced === 'boolean') {
      app.agent.fenced = fenced;
      app.log.warn({ fenced }, fenced ? 'fenced by the cluster-manager: refusing tasks' : 'no longer fenced');
    }
  });
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
