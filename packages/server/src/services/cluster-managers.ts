import type { ClusterManagerApi } from '@duplex/contracts';
import { bearer, JsonClient, ProblemError, problemCodeOf, sleep, type ProblemDocument } from '@duplex/shared';
import type { ServerContext } from '../context.ts';
import { clusterManagerUrl } from '../repositories/inventories.ts';

export type ClusterManagerInventory = ClusterManagerApi.components['schemas']['Inventory'];

/**
 * Calls the cluster-manager of one cluster on a user's behalf (failback, device
 * administration, rescans). Its problems come back as the same problems; an answer it cannot
 * give (unreachable, 5xx) is `upstream-unavailable`.
 */
export async function callClusterManager<T>(
  context: ServerContext,
  target: { storageSystemId: string; clusterId: string },
  request: { method: 'GET' | 'POST' | 'DELETE'; path: string; body?: unknown; requestId: string; expect: number },
): Promise<T> {
  const { storageSystemId, clusterId } = target;
  const managerUrl = await clusterManagerUrl(context.db, storageSystemId, clusterId);
  if (!managerUrl) throw new ProblemError('cluster-not-found', `cluster '${clusterId}' of storage system '${storageSystemId}' is not known`);
  const client = new JsonClient(managerUrl, { name: `cluster-manager ${clusterId}`, timeoutMs: 30_000, connections: 1, headers: bearer(context.config.SERVICE_TOKEN) });
  try {
    const response = await client.call<T & ProblemDocument>(request.method, request.path, { body: request.body, requestId: request.requestId });
    if (response.status === request.expect) return response.body;
    const code = response.status < 500 ? problemCodeOf(response.body ?? {}) : undefined;
    if (code) throw new ProblemError(code, response.body.detail ?? `the cluster-manager of cluster ${clusterId} answered ${response.status}`);
    throw new ProblemError('upstream-unavailable', `the cluster-manager of cluster ${clusterId} answered ${response.status}`);
  } catch (error) {
    if (error instanceof ProblemError) throw error;
    throw new ProblemError('upstream-unavailable', `the cluster-manager of cluster ${clusterId} cannot be reached: ${(error as Error).message}`, { cause: error });
  } finally {
    await client.close();
  }
}

/**
 * Waits (up to `timeoutMs`) until this server's view of the cluster holds `version`, so a
 * read right after an operator's change shows it. The change is stored either way.
 */
export async function awaitInventoryVersion(context: ServerContext, storageSystemId: string, clusterId: string, version: number, timeoutMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((context.inventory.cluster(storageSystemId, clusterId)?.version ?? 0) >= version) return true;
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
}
