import { unwrap, type DuplexClient } from '@duplex/client';
import type { ServerApi } from '@duplex/contracts';
import type { Connection } from './connection.ts';
import { bytes, exitCodes, since, table, UsageError, type Output } from './output.ts';
import { positional } from './tasks.ts';

type Agent = ServerApi.components['schemas']['Agent'];
type Device = ServerApi.components['schemas']['Device'];
type Cluster = ServerApi.components['schemas']['Cluster'];

export interface AdminOptions {
  system?: string;
  reason?: string;
  name?: string;
  role?: string;
  'expires-in'?: string;
}

async function devicesOf(client: DuplexClient, system: string): Promise<Device[]> {
  return unwrap(await client.api.GET('/v1/storage-systems/{id}/devices', { params: { path: { id: system }, query: { limit: 500 } } })).items;
}

const deviceTable = (devices: Device[]): string =>
  table(
    ['DEVICE', 'HOME', 'OWNER', 'STATE', 'USED', 'CAPACITY', 'VOLUMES', 'REASON'],
    devices.map((device) => [device.id, device.home_cluster, device.owner_cluster, device.state, bytes(device.used_bytes), bytes(device.capacity_bytes), device.volume_count, device.reason]),
  );

/** Each server's own agents (a server lists only those registered with it); a server that cannot answer is said so. */
async function agentsByServer(connection: Connection): Promise<{ url: string; agents?: Agent[]; error?: string }[]> {
  return Promise.all(
    connection.perServer.map(async ({ url, client }) => {
      try {
        return { url, agents: unwrap(await client.api.GET('/v1/agents', { params: { query: { limit: 500 } } })).items };
      } catch (error) {
        return { url, error: (error as Error).message };
      }
    }),
  );
}

/** Storage systems, clusters with their state and what they own, agents per server and cluster, devices. */
async function status(connection: Connection, output: Output): Promise<number> {
  const { api } = connection.client;
  const systems = unwrap(await api.GET('/v1/storage-systems', { params: { query: { limit: 500 } } })).items;
  const detail = await Promise.all(
    systems.map(async (system) => ({
      system,
      clusters: unwrap(await api.GET('/v1/storage-systems/{id}/clusters', { params: { path: { id: system.id } } })).items as Cluster[],
      devices: await devicesOf(connection.client, system.id),
    })),
  );
  const servers = await agentsByServer(connection);
  if (output.json) {
    output.write(JSON.stringify({ storage_systems: detail, servers }, null, 2));
    return exitCodes.ok;
  }
  const sections: string[] = [];
  for (const { system, clusters, devices } of detail) {
    sections.push(`storage system ${system.id}: ${system.devices_available} of ${system.device_count} devices available`);
    sections.push(
      table(
        ['CLUSTER', 'STATE', 'EPOCH', 'OWNS', 'HOME DEVICES ELSEWHERE', 'INVENTORY'],
        clusters.map((cluster) => {
          const owned = devices.filter((device) => device.owner_cluster === cluster.id).map((device) => device.id);
          const away = devices.filter((device) => device.home_cluster === cluster.id && device.owner_cluster !== cluster.id).map((device) => `${device.id}→${device.owner_cluster}`);
          return [cluster.id, cluster.state, cluster.epoch, owned.join(' ') || '-', away.join(' ') || '-', `v${cluster.inventory_version}, ${since(cluster.reported_at)}`];
        }),
      ),
    );
    sections.push(deviceTable(devices));
  }
  const agentRows = servers.flatMap(({ url, agents, error }) =>
    error ? [[url, '-', '-', 'unreachable', error]] : (agents ?? []).map((agent) => [url, `${agent.storage_system_id}/${agent.cluster_id}`, agent.name, agent.state, `pid ${agent.pid}, heartbeat ${since(agent.heartbeat_at)}`]),
  );
  sections.push(table(['SERVER', 'CLUSTER', 'AGENT', 'STATE', 'DETAIL'], agentRows));
  output.write(sections.join('\n\n'));
  return exitCodes.ok;
}

export async function runAdminCommand(connection: Connection, output: Output, command: string, args: string[], options: AdminOptions): Promise<number> {
  const { api } = connection.client;
  const system = options.system ?? 'ss1';
  const print = (value: unknown, text: () => string) => output.write(output.json ? JSON.stringify(value, null, 2) : text());
  const [action, first] = args;
  switch (`${command} ${action ?? ''}`.trim()) {
    case 'status':
      return status(connection, output);
    case 'device list': {
      const devices = await devicesOf(connection.client, system);
      print(devices, () => deviceTable(devices));
      return exitCodes.ok;
    }
    case 'device set-state': {
      const device = positional(first, 'a device id', 'device set-state');
      const state = positional(args[2], 'a state (available or offline)', 'device set-state');
      if (state !== 'available' && state !== 'offline') throw new UsageError(`device set-state takes available or offline, not '${state}'`);
      const body = { state, ...(options.reason ? { reason: options.reason } : {}) } as const;
      const changed = unwrap(await api.POST('/v1/storage-systems/{id}/devices/{device_id}:set-state', { params: { path: { id: system, device_id: device } }, body }));
      print(changed, () => `${system}/${changed.id}: ${changed.state}${changed.reason ? ` (${changed.reason})` : ''}`);
      return exitCodes.ok;
    }
    case 'device rescan': {
      const cluster = positional(first, 'a cluster id', 'device rescan');
      const result = unwrap(await api.POST('/v1/storage-systems/{id}/clusters/{cluster_id}:rescan', { params: { path: { id: system, cluster_id: cluster } } }));
      print(result, () => `${system}/${cluster}: rescanned, inventory version ${result.inventory_version}, ${result.device_count} devices`);
      return exitCodes.ok;
    }
    case 'cluster failback': {
      const cluster = positional(first, 'a cluster id', 'cluster failback');
      const result = unwrap(await api.POST('/v1/storage-systems/{id}/clusters/{cluster_id}:failback', { params: { path: { id: system, cluster_id: cluster } } }));
      print(result, () => `${system}/${cluster}: ${result.state}, epoch ${result.epoch}; devices back: ${result.devices.join(' ')}`);
      return exitCodes.ok;
    }
    case 'token create': {
      const name = positional(options.name, '--name', 'token create');
      const role = positional(options.role, '--role (viewer, operator or admin)', 'token create');
      if (!['viewer', 'operator', 'admin'].includes(role)) throw new UsageError(`--role is viewer, operator or admin, not '${role}'`);
      const body = { name, role: role as 'viewer', ...(options['expires-in'] ? { expires_in_s: Number(options['expires-in']) } : {}) };
      const token = unwrap(await api.POST('/v1/tokens', { body }));
      print(token, () => `${token.id} (${token.role}, ${token.expires_at ? `expires ${token.expires_at}` : 'until revoked'})\nsecret, shown this once: ${token.secret}`);
      return exitCodes.ok;
    }
    case 'token list': {
      const tokens = unwrap(await api.GET('/v1/tokens', { params: { query: { limit: 500 } } })).items;
      print(tokens, () => table(['ID', 'NAME', 'ROLE', 'CREATED', 'EXPIRES', 'REVOKED'], tokens.map((t) => [t.id, t.name, t.role, t.created_at, t.expires_at, t.revoked_at])));
      return exitCodes.ok;
    }
    case 'token revoke': {
      const id = positional(first, 'a token id', 'token revoke');
      const token = unwrap(await api.DELETE('/v1/tokens/{id}', { params: { path: { id } } }));
      print(token, () => `${token.id} revoked at ${token.revoked_at}`);
      return exitCodes.ok;
    }
    default:
      throw new UsageError(`unknown command: ${[command, action].filter(Boolean).join(' ')}`);
  }
}
