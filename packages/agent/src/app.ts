import type { AgentApi } from '@duplex/contracts';
import { createServiceApp, loadTls, mountServiceContract, operationalHandlers, ProblemError, secretIs, type OperationHandlers } from '@duplex/shared';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { AgentConfig } from './config.ts';
import { AgentMetrics } from './metrics.ts';
import { ServerLink } from './services/server-link.ts';
import { TaskRunner } from './services/task-runner.ts';

export interface BuildAgentOptions {
  config: AgentConfig;
  logger?: FastifyServerOptions['logger'];
}

/** The agent's moving parts; start() begins registration once the agent's URL is known. */
export interface AgentRuntime {
  link: ServerLink | undefined;
  runner: TaskRunner | undefined;
  /** Set by the cluster-manager while the cluster does not hold its lease. */
  fenced: boolean;
  start(url: string): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    agent: AgentRuntime;
  }
}

export async function buildApp(options: BuildAgentOptions): Promise<FastifyInstance> {
  const { config } = options;
  const app = await createServiceApp({
    service: `agent-${config.AGENT_NAME}`,
    contract: 'agent',
    logger: options.logger,
    tls: loadTls(config),
    // Its cluster-manager calls with the cluster's token; its server dispatches with the agent's own credential.
    credentials: {
      checks: { cluster: secretIs(config.CLUSTER_TOKEN), server: (secret) => app.agent.link?.holdsCredential(secret) ?? false },
      failureLimit: config.AUTH_FAILURE_LIMIT,
      failureWindowMs: config.AUTH_FAILURE_WINDOW_MS,
    },
  });
  const startedAt = new Date().toISOString();
  const metrics = new AgentMetrics(app.metrics.registry);
  const runtime: AgentRuntime = {
    link: undefined,
    runner: undefined,
    fenced: false,
    start(url) {
      const link = new ServerLink(config, app.log, { url, pid: process.pid, startedAt }, metrics);
      runtime.link = link;
      runtime.runner = new TaskRunner(config, link, app.log, metrics);
      link.start();
    },
  };
  app.decorate('agent', runtime);
  app.addHook('onClose', async () => {
    await runtime.runner?.close();
    await runtime.link?.close();
  });

  const handlers: OperationHandlers<AgentApi.operations> = {
    ...operationalHandlers('agent', async () => ({
      registration: runtime.link?.registered ? 'ok' : 'not registered',
      lease: runtime.fenced ? 'the cluster does not hold its lease' : 'ok',
      driver: runtime.runner ? await runtime.runner.driverCheck() : 'not started',
    })),
    async getAgentStatus() {
      const { link, runner } = runtime;
      return {
        name: config.AGENT_NAME,
        server_id: config.SERVER_ID,
        storage_system_id: config.STORAGE_SYSTEM_ID,
        cluster_id: config.CLUSTER_ID,
        agent_id: link?.registration?.id ?? null,
        incarnation: link?.registration?.incarnation ?? null,
        registered: link?.registered ?? false,
        fenced: runtime.fenced,
        inventory_version: link?.reportedInventoryVersion ?? null,
        tasks_in_hand: runner?.size ?? 0,
        reports_pending: link?.reports.size ?? 0,
      };
    },
    async acceptTasks(request, reply) {
      const { link, runner } = runtime;
      if (runtime.fenced) throw new ProblemError('fenced', 'the cluster does not hold its lease; it takes no tasks until it does');
      if (!link?.registered || !runner) throw new ProblemError('not-ready', 'the agent is not registered with its server yet');
      return reply.code(202).send(runner.accept(request.body.tasks));
    },
    async notifyInventoryChange(request, reply) {
      runtime.link?.reportInventory();
      return reply.code(202).send({ version: request.body.version });
    },
  };
  mountServiceContract(app, 'agent', handlers);
  return app;
}
