import type { ServerApi } from '@duplex/contracts';
import { parseTraceparent, ProblemError, traceLogFields, type OperationHandlers } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { ServerContext } from '../context.ts';
import { dueForRotation, newAgentCredential } from '../lib/agent-credentials.ts';
import { agentIdOf } from '../lib/ids.ts';
import { GroupCommitQueue } from '../lib/group-commit.ts';
import { maxRenewalsPerStatement, renewAgentLeases, renewedFor, renewLostAgentLeases, type LeaseRenewal, type RenewedLease } from '../repositories/agent-leases.ts';
import * as agents from '../repositories/agents.ts';
import { storeInventoryReport } from '../repositories/inventories.ts';
import { recordTransitions, requeueAgentAttempts, requeueAttemptsOnMovedDevices, type StateReport } from '../repositories/tasks.ts';

type Ops = ServerApi.operations;

/** Lease renewal statements a server runs at once; its pool (DATABASE_POOL_MAX, at least 1) bounds them too. */
const renewalStatementsInFlight = 4;
/**
 * How long a renewal statement waits for more heartbeats before it starts: fewer, larger
 * statements, for a millisecond more per heartbeat (the lease is seconds long). At 5,000 agents
 * it took the server from 0.79-0.82 to 0.66-0.70 cores and its Postgres from 0.38 to 0.27-0.29
 * (bench/RESULTS.md).
 */
const renewalGatherMs = 1;
type AgentOps = 'registerAgent' | 'listAgents' | 'getAgent' | 'heartbeatAgent' | 'reportInventory' | 'reportTaskStates';

export function agentHandlers(context: ServerContext): Pick<OperationHandlers<Ops>, AgentOps> {
  const { config, db } = context;
  // Heartbeats that come together renew together; those of agents marked lost come back together, with their events.
  const leaseQueue = (renew: typeof renewAgentLeases, maxInFlight: number, gatherMs: number) =>
    new GroupCommitQueue<LeaseRenewal, RenewedLease | undefined>(
      async (batch) => renewedFor(batch, await renew(db, config.SERVER_ID, batch, config.AGENT_LEASE_TTL_MS)),
      { maxBatch: maxRenewalsPerStatement, maxInFlight, gatherMs },
    );
  // One statement at a time carried about 5,000 heartbeats/s at most (32 per round trip): several keep up beyond.
  const renewals = leaseQueue(renewAgentLeases, renewalStatementsInFlight, renewalGatherMs);
  const returns = leaseQueue(renewLostAgentLeases, 1, 0);

  /** Whether the agent's credential has lived half its life, and is replaced with this heartbeat. */
  function rotationDue(id: string): boolean {
    return dueForRotation(context.agents.get(id)?.credentials[0], config.AGENT_CREDENTIAL_TTL_MS);
  }

  /**
   * A new credential for the agent: stored (the current one stays valid until it expires) and
   * answered with the heartbeat.
   */
  async function rotate(id: string): Promise<{ credential: string; credential_expires_at: string }> {
    const held = context.agents.get(id)?.credentials ?? [];
    const credential = newAgentCredential(config.AGENT_CREDENTIAL_TTL_MS);
    await agents.rotateAgentCredential(db, id, credential.stored.sha256, new Date(credential.stored.expiresAt));
    context.agents.setCredentials(id, [credential.stored, ...held.slice(0, 1)]);
    return { credential: credential.secret, credential_expires_at: new Date(credential.stored.expiresAt).toISOString() };
  }

  /** The agent must be one of this server's, registered under the given id. */
  async function ownAgent(id: string): Promise<agents.AgentRow> {
    const row = await agents.findAgent(db, id);
    if (!row || row.server_id !== config.SERVER_ID) throw new ProblemError('agent-not-found', `agent '${id}' is not registered with server ${config.SERVER_ID}`);
    return row;
  }

  return {
    async registerAgent(request, reply) {
      const body = request.body;
      context.authenticator.admitJoining(request.headers.authorization, body.storage_system_id, request.ip);
      if (body.server_id !== config.SERVER_ID) {
        throw new ProblemError('wrong-server', `this is server ${config.SERVER_ID}; the agent is configured for server ${body.server_id}`);
      }
      const id = agentIdOf(body);
      const credential = newAgentCredential(config.AGENT_CREDENTIAL_TTL_MS);
      const { row, created, newIncarnation } = await db.transaction(async (trx) => {
        const result = await agents.upsertAgent(trx, id, body, config.AGENT_LEASE_TTL_MS);
        await agents.rotateAgentCredential(trx, id, credential.stored.sha256, new Date(credential.stored.expiresAt));
        await agents.recordRegistration(trx, result);
        if (result.created || result.newIncarnation) {
          // The previous incarnation's attempts died with it: run them again under new tokens.
          await recordTransitions(trx, await requeueAgentAttempts(trx, id));
        }
        return result;
      });
      context.agents.upsert({
        id,
        storage_system_id: row.storage_system_id,
        cluster_id: row.cluster_id,
        url: row.url,
        incarnation: row.incarnation,
        leaseExpiresAt: row.lease_expires_at.getTime(),
        // A new registration starts with the new credential alone: the old one's process is gone or starting over.
        credentials: [credential.stored],
        dispatchCredential: credential.secret,
      });
      if (created || newIncarnation) request.log.info({ agent_id: id, incarnation: row.incarnation }, 'agent registered');
      context.dispatcher.kick();
      return reply.code(created ? 201 : 200).send({
        id,
        incarnation: row.incarnation,
        lease_ttl_ms: config.AGENT_LEASE_TTL_MS,
        heartbeat_interval_ms: config.AGENT_HEARTBEAT_INTERVAL_MS,
        lease_expires_at: row.lease_expires_at.toISOString(),
        server_id: config.SERVER_ID,
        credential: credential.secret,
        credential_expires_at: new Date(credential.stored.expiresAt).toISOString(),
      });
    },

    async listAgents(request) {
      const { limit = 50, cursor, server_id: serverId = config.SERVER_ID, ...filters } = request.query;
      const page = await agents.listAgents(db, serverId === '*' ? undefined : serverId, filters, limit, cursor);
      const now = new Date();
      return { items: page.items.map((row) => agents.toAgentResource(row, now)), next_cursor: page.next_cursor };
    },

    async getAgent(request) {
      return agents.toAgentResource(await ownAgent(request.params.id));
    },

    async heartbeatAgent(request) {
      const { id } = request.params;
      const heartbeat = { agentId: id, incarnation: request.body.incarnation };
      const renewed = (await renewals.add(heartbeat)) ?? (await returns.add(heartbeat));
      context.metrics.heartbeat(renewed !== undefined);
      if (!renewed) {
        const current = await ownAgent(id);
        throw new ProblemError('stale-incarnation', `incarnation ${current.incarnation} of agent '${id}' is registered, not ${request.body.incarnation}`);
      }
      context.agents.renew(id, renewed.lease_expires_at.getTime());
      const view = context.inventory.cluster(renewed.storage_system_id, renewed.cluster_id);
      const answer = { lease_expires_at: renewed.lease_expires_at.toISOString(), inventory_version: view?.version ?? null };
      // Nearly every heartbeat has nothing to rotate: it is answered without a further await.
      return rotationDue(id) ? { ...answer, ...(await rotate(id)) } : answer;
    },

    async reportInventory(request) {
      const agent = await ownAgent(request.params.id);
      const report = request.body;
      if (report.storage_system_id !== agent.storage_system_id || report.cluster_id !== agent.cluster_id) {
        throw new ProblemError(
          'agent-mismatch',
          `agent '${agent.id}' serves ${agent.storage_system_id}/${agent.cluster_id}, not ${report.storage_system_id}/${report.cluster_id}`,
        );
      }
      const { stored, version } = await storeInventoryReport(db, config.SERVER_ID, agent.id, report);
      if (stored) {
        context.inventory.apply(stored);
        // Attempts running in a cluster that lost these devices (a takeover) start again where they are now.
        const owned = report.devices.filter((device) => device.owner_cluster === report.cluster_id).map((device) => device.id);
        await db.transaction(async (trx) =>
          recordTransitions(trx, await requeueAttemptsOnMovedDevices(trx, config.SERVER_ID, report.storage_system_id, report.cluster_id, owned)),
        );
        context.dispatcher.kick();
      }
      return { accepted: stored !== undefined, version };
    },

    async reportTaskStates(request) {
      // The agent's credential showed it is this server's: the registry holds no other, and no
      // agent's row is ever removed. Which tasks it may report on is checked with the reports.
      const outcomes = await context.tasks.applyReports(request.params.id, request.body.reports);
      logAppliedReports(request.server.log, String(request.id), request.body.reports, outcomes);
      const values = [...outcomes.values()];
      // A refused attempt went back to the queue; any other report frees nothing the dispatcher waits for.
      if (request.body.reports.some((report) => report.state === 'refused' && outcomes.get(report.task_id) === 'applied')) context.dispatcher.kick();
      if (values.every((outcome) => outcome === 'stale')) {
        throw new ProblemError('stale-fencing-token', `no report applied: each carries a fencing token that is not its task's current attempt (${[...outcomes.keys()].join(', ')})`);
      }
      return { results: [...outcomes].map(([task_id, outcome]) => ({ task_id, outcome })) };
    },
  };
}

/**
 * One line per applied report, under the task's trace (carried by the report) rather than the
 * report request's: a batch holds reports of many tasks.
 */
function logAppliedReports(log: FastifyBaseLogger, requestId: string, reports: StateReport[], outcomes: Map<string, string>): void {
  for (const report of reports) {
    if (outcomes.get(report.task_id) !== 'applied') continue;
    const trace = parseTraceparent(report.traceparent);
    log.info(
      { request_id: requestId, task_id: report.task_id, fencing_token: report.fencing_token, state: report.state, ...(trace ? traceLogFields(trace) : {}) },
      'task report applied',
    );
  }
}
