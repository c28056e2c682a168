import { runService } from '@duplex/shared';
import { buildApp } from './app.ts';
import { loadAgentConfig } from './config.ts';

/** What the cluster-manager says over IPC; kept here until the app exists to act on it. */
const supervisor = { fenced: false, onFence: (_fenced: boolean) => {} };
process.on('message', (message: unknown) => {
  const { type, fenced } = (message ?? {}) as { type?: unknown; fenced?: unknown };
  if (type === 'fence' && typeof fenced === 'boolean') {
    supervisor.fenced = fenced;
    supervisor.onFence(fenced);
  }
});

// A spare agent (AGENT_STANDBY=1) loads everything, then waits for its cluster-manager to give
// it the identity of an agent that died, and starts as that agent.
if (process.env.AGENT_STANDBY === '1') {
  const identity = await new Promise<Record<string, string>>((resolve) => {
    process.on('message', (message: unknown) => {
      const { type, env } = (message ?? {}) as { type?: unknown; env?: Record<string, string> };
      if (type === 'assume' && env) resolve(env);
    });
    process.send?.({ type: 'standby' });
  });
  Object.assign(process.env, identity);
  delete process.env.AGENT_STANDBY;
}

await runService('duplex agent', async () => {
  const config = loadAgentConfig();
  const app = await buildApp({ config });
  app.agent.fenced = supervisor.fenced;
  supervisor.onFence = (fenced) => {
    app.agent.fenced = fenced;
    app.log.warn({ fenced }, fenced ? 'fenced by the cluster-manager: refusing tasks' : 'no longer fenced');
  };
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
