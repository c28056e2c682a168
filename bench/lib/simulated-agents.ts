/**
 * Simulated agents as the server sees them: registrations that speak the real protocol
 * (POST /v1/agents), two per storage system (clusters c0 and c1 of `ss-<n>`), each named the
 * way the cluster-managers name real agents (`ss-7-c1-A`). Their URL is a port nothing
 * listens on: the benchmark sends them no tasks.
 */
import type { ServerApi } from '@duplex/contracts';
import type { JsonClient } from '@duplex/shared';
import type { SimulatedAgent } from './heartbeat-generator.ts';

type AgentRegistrationRequest = ServerApi.components['schemas']['AgentRegistrationRequest'];
type AgentRegistration = ServerApi.components['schemas']['AgentRegistration'];

/** Port 1 (tcpmux) is closed on any ordinary machine; nothing is ever sent there. */
const unreachableAgentUrl = 'http://127.0.0.1:1';

export function simulatedAgentRequest(index: number, serverId: string, startedAt: Date): AgentRegistrationRequest {
  const storageSystemId = `ss-${Math.floor(index / 2)}`;
  const clusterId = `c${index % 2}`;
  return {
    name: `${storageSystemId}-${clusterId}-${serverId}`,
    server_id: serverId,
    storage_system_id: storageSystemId,
    cluster_id: clusterId,
    url: unreachableAgentUrl,
    pid: process.pid,
    started_at: startedAt.toISOString(),
  };
}

/** The id the server gives the i-th simulated agent (server:system:cluster:name), for targets that do not register agents (the floor). */
export function simulatedAgentId(index: number, serverId: string): string {
  const request = simulatedAgentRequest(index, serverId, new Date(0));
  return `${serverId}:${request.storage_system_id}:${request.cluster_id}:${request.name}`;
}

/**
 * Registers agents `from` to `to - 1` with `concurrency` registrations in flight; throws on
 * the first answer other than 201 (each is a new agent).
 */
export async function registerAgents(
  client: JsonClient,
  serverId: string,
  joinToken: string,
  startedAt: Date,
  range: { from: number; to: number },
  concurrency: number,
): Promise<SimulatedAgent[]> {
  const { from, to } = range;
  const registered: SimulatedAgent[] = new Array<SimulatedAgent>(Math.max(0, to - from));
  let next = from;
  const worker = async () => {
    while (next < to) {
      const index = next;
      next += 1;
      const response = await client.call<AgentRegistration>('POST', '/v1/agents', {
        body: simulatedAgentRequest(index, serverId, startedAt),
        headers: { authorization: `Bearer ${joinToken}` },
        timeoutMs: 30_000,
      });
      if (response.status !== 201) throw new Error(`registering simulated agent ${index} was answered ${response.status}: ${JSON.stringify(response.body)}`);
      registered[index - from] = { id: response.body.id, incarnation: response.body.incarnation, credential: response.body.credential };
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return registered;
}
