import { runService } from '@duplex/shared';
import { buildApp } from './app.ts';
import { loadAgentConfig } from './config.ts';

/** What the cluster-manager says over IPC; kept here until the app exists to act on it. */
const supervisor = {
  fenced: false,
  identity: undefined as Record<string, string> | undefined,
  onFence: (_fenced: boolean) => {},
  onIdentity: () => {},
};
process.on('message', (message: unknown) => {
  const { type, fenced, env } = (message ?? {}) as { type?: unknown; fenced?: unknown; env?: Record<string, string> };
  if (type === 'fence' && typeof fenced === 'boolean') {
    supervisor.fenced = fenced;
    supervisor.onFence(fenced);
  }
  if (type === 'assume' && env) {
    supervisor.identity = env;
    supervisor.onIdentity();
  }
});

// An agent launched by a cluster-manager ends with it: otherwise a restarted cluster-manager
// would launch a second process under the same identity, and the two would take turns
// registering and requeueing each other's work.
if (process.send) process.once('disconnect', () => process.exit(1));

/** A spare takes its identity later; until then it is built and ready under a placeholder one. */
const standby = process.env.AGENT_STANDBY === '1';
const placeholder = { AGENT_NAME: 'standby', SERVER_ID: 'standby', SERVER_URL: 'http://127.0.0.1:9' };

await runService('duplex agent', async () => {
  const config = loadAgentConfig(standby ? { ...process.env, ...placeholder } : process.env);
  const app = await buildApp({ config });
  app.agent.fenced = supervisor.fenced;
  supervisor.onFence = (fenced) => {
    app.agent.fenced = fenced;
    app.log.warn({ fenced }, fenced ? 'fenced by the cluster-manager: refusing tasks' : 'no longer fenced');
  };
  if (standby) {
    // A spare agent has everything loaded and every route compiled, then waits for the
    // cluster-manager to give it the identity of an agent that died, and starts as that agent.
    await app.ready();
    const identity = await new Promise<Record<string, string>>((resolve) => {
      supervisor.onIdentity = () => resolve(supervisor.identity!);
      if (supervisor.identity) resolve(supervisor.identity);
      process.send?.({ type: 'standby' });
    });
    Object.assign(config, loadAgentConfig({ ...process.env, ...identity }));
    // pino's setBindings names the agent in every later log line.
    (app.log as unknown as { setBindings(bindings: object): void }).setBindings({ service: `agent-${config.AGENT_NAME}` });
  }
  return {
    app,
    host: config.AGENT_HOST,
    port: config.AGENT_PORT,
    afterListen: async () => {
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : config.AGENT_PORT;
      const url = `${config.TLS_CERT_FILE ? 'https' : 'http'}://${config.AGENT_PUBLIC_HOST ?? config.AGENT_HOST}:${port}`;
      // A supervising cluster-manager learns the agent's URL over IPC, to broadcast changes to it.
      process.send?.({ type: 'listening', url });
      app.agent.start(url);
    },
  };
});
