import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { provisionFileDevice } from '@duplex/driver';
import {
  bundleDirectory,
  bundleState,
  chooseServiceRuntime,
  createDatabase,
  JsonClient,
  loadTls,
  migrateToLatest,
  pendingMigrations,
  sleep,
  spawnService,
  useClientTls,
  withoutSecrets,
  type ServiceRuntime,
} from '@duplex/shared';
import { startLocalPostgres, type RunningPostgres } from './postgres.ts';
import { hostOf, portOf, type Topology } from './topology.ts';
import { allowTypeScriptImports } from './typescript-imports.ts';

export interface ProcessSpec {
  name: string;
  role: 'driver' | 'server' | 'cluster-manager';
  env: Record<string, string>;
  url: string;
}

export interface RunningTopology {
  databaseUrl: string;
  embedded: boolean;
  stop(): Promise<void>;
}

/** The processes a topology needs, in start order: drivers, servers, then cluster-managers (which launch the agents). */
/**
 * The secrets the processes start with: the servers' admin token, each storage system's join
 * token, the control plane's token (servers and cluster-managers), and each cluster's token
 * (its cluster-manager, driver and agents), keyed `system/cluster`.
 */
export interface TopologySecrets {
  adminToken: string;
  joinTokens: Record<string, string>;
  serviceToken: string;
  clusterTokens: Record<string, string>;
}

const newSecret = (prefix: string): string => `${prefix}_${randomBytes(32).toString('base64url')}`;

/**
 * The service secrets, new at each start (every process starts with them, and agents register
 * anew anyway); the admin token is the user's and is kept.
 */
export function newTopologySecrets(topology: Topology, adminToken: string): TopologySecrets {
  const systems = topology.storage_systems;
  return {
    adminToken,
    joinTokens: Object.fromEntries(systems.map((system) => [system.id, newSecret('dpj')])),
    serviceToken: newSecret('dps'),
    clusterTokens: Object.fromEntries(systems.flatMap((system) => system.clusters.map((cluster) => [`${system.id}/${cluster.id}`, newSecret('dpc')]))),
  };
}

export function processSpecs(topology: Topology, databaseUrl: string, secrets: TopologySecrets): ProcessSpec[] {
  const drivers: ProcessSpec[] = [];
  const managers: ProcessSpec[] = [];
  for (const system of topology.storage_systems) {
    const devices = system.devices.map((device) => `${device.id}:${device.home_cluster}:${device.capacity_bytes}`).join(',');
    for (const cluster of system.clusters) {
      drivers.push({
        name: `driver-${system.id}-${cluster.id}`,
        role: 'driver',
        url: cluster.driver_url,
        env: {
          DRIVER_HOST: hostOf(cluster.driver_url),
          DRIVER_PORT: String(portOf(cluster.driver_url)),
          STORAGE_SYSTEM_ID: system.id,
          DRIVER_CLUSTER_ID: cluster.id,
          DRIVER_BACKEND: system.backend,
          DRIVER_DEVICE_ROOT: system.device_root ?? '',
          DRIVER_MEMORY_DEVICES: devices,
          CLUSTER_TOKEN: secrets.clusterTokens[`${system.id}/${cluster.id}`] ?? '',
        },
      });
      const servers = topology.servers.filter((server) => cluster.servers.includes(server.id));
      managers.push({
        name: `cluster-manager-${system.id}-${cluster.id}`,
        role: 'cluster-manager',
        url: cluster.manager_url,
        env: {
          CM_HOST: hostOf(cluster.manager_url),
          CM_PORT: String(portOf(cluster.manager_url)),
          STORAGE_SYSTEM_ID: system.id,
          CLUSTER_ID: cluster.id,
          DATABASE_URL: databaseUrl,
          DRIVER_URL: cluster.driver_url,
          CM_SERVERS: servers.map((server) => `${server.id}=${server.url}`).join(','),
          JOIN_TOKEN: secrets.joinTokens[system.id] ?? '',
          CLUSTER_TOKEN: secrets.clusterTokens[`${system.id}/${cluster.id}`] ?? '',
          SERVICE_TOKEN: secrets.serviceToken,
        },
      });
    }
  }
  const servers: ProcessSpec[] = topology.servers.map((server) => ({
    name: `server-${server.id}`,
    role: 'server',
    url: server.url,
    env: {
      SERVER_ID: server.id,
      SERVER_HOST: hostOf(server.url),
      SERVER_PORT: String(portOf(server.url)),
      SERVER_PUBLIC_URL: server.url.replace(/\/$/, ''),
      DATABASE_URL: databaseUrl,
      ADMIN_TOKEN: secrets.adminToken,
      JOIN_TOKENS: Object.entries(secrets.joinTokens)
        .map(([systemId, token]) => `${systemId}=${token}`)
        .join(','),
      SERVICE_TOKEN: secrets.serviceToken,
    },
  }));
  // Every process serves and calls with the topology's TLS (agents get it from their cluster-manager's environment).
  const tls = tlsSettingsOf(topology);
  return [...drivers, ...servers, ...managers].map((spec) => ({ ...spec, env: { ...spec.env, ...tls } }));
}

/** The TLS_* settings of every process of the topology; none without `tls`. */
export function tlsSettingsOf(topology: Topology): Record<string, string> {
  const { tls } = topology;
  if (!tls) return {};
  return {
    TLS_CERT_FILE: tls.cert_file,
    TLS_KEY_FILE: tls.key_file,
    ...(tls.ca_file ? { TLS_CA_FILE: tls.ca_file } : {}),
    TLS_CLIENT_AUTH: tls.client_auth ?? 'none',
  };
}

/**
 * Runs a topology on this machine: Postgres (embedded unless DATABASE_URL is set),
 * migrations, device directories, then every process, each waited for until ready.
 */
export async function runTopology(topology: Topology, options: { databaseUrl?: string; adminToken: string; say: (line: string) => void }): Promise<RunningTopology> {
  const secrets = newTopologySecrets(topology, options.adminToken);
  // The launcher's own calls (readiness, the agents' count) present and trust what the processes do.
  useClientTls(loadTls(tlsSettingsOf(topology)).client);
  const { say } = options;
  let postgres: RunningPostgres | undefined;
  let databaseUrl = options.databaseUrl;
  if (!databaseUrl) {
    postgres = await startLocalPostgres(topology.postgres.data_dir, topology.postgres.port, say);
    databaseUrl = postgres.url;
  }
  await prepareTopology(topology, databaseUrl, say);
  const runtime = serviceRuntime(say);

  mkdirSync(topology.logs_dir, { recursive: true });
  const children = new Map<string, { spec: ProcessSpec; child: ChildProcess }>();
  const restarts = new Set<NodeJS.Timeout>();
  let stopping = false;
  const stop = async () => {
    stopping = true;
    for (const timer of restarts) clearTimeout(timer);
    // Cluster-managers first (they stop their agents), then servers, then drivers.
    for (const role of ['cluster-manager', 'server', 'driver'] as const) {
      await Promise.all([...children.values()].filter(({ spec }) => spec.role === role).map(({ child }) => stopChild(child)));
    }
    await postgres?.stop();
  };

  const spawnChild = (spec: ProcessSpec): ChildProcess => {
    const logFile = join(topology.logs_dir, `${spec.name}.log`);
    const child = spawnService(spec.role, { runtime, env: { ...withoutSecrets(process.env), ...spec.env }, stdio: ['ignore', openSync(logFile, 'a'), openSync(logFile, 'a')] });
    children.set(spec.name, { spec, child });
    child.once('exit', (code, signal) => {
      if (stopping) return;
      // Like a service manager, restart what died; the delay lets the peer see a lost cluster.
      say(`${spec.name} exited (${signal ?? `code ${code}`}); restarting in ${topology.restart_delay_ms} ms (log: ${logFile})`);
      const timer = setTimeout(() => {
        restarts.delete(timer);
        if (!stopping) spawnChild(spec);
      }, topology.restart_delay_ms);
      restarts.add(timer);
    });
    return child;
  };
  try {
    // Every process starts at once: a cluster-manager waits for its driver by itself (up to
    // DRIVER_WAIT_MS), and agents retry their registration until their server listens, so
    // starting in waves would only add each wave's slowest start to the wait.
    const specs = processSpecs(topology, databaseUrl, secrets);
    await Promise.all(specs.map((spec) => waitUntilReady(spec, spawnChild(spec))));
  } catch (error) {
    await stop();
    throw error;
  }
  return { databaseUrl, embedded: postgres !== undefined, stop };
}

/** How the services will run (DUPLEX_RUNTIME, or the bundles when they are up to date), said once. */
function serviceRuntime(say: (line: string) => void): ServiceRuntime {
  const runtime = chooseServiceRuntime(process.env);
  const bundles = bundleState();
  if (runtime === 'source') {
    const why = bundles.state === 'fresh' || process.env.DUPLEX_RUNTIME ? '' : `: ${bundles.reason}; npm run build makes the bundles`;
    say(`the services run from their TypeScript sources (tsx)${why}`);
  } else if (bundles.state === 'missing') {
    throw new Error(`DUPLEX_RUNTIME=bundle, but ${bundles.reason}: run npm run build`);
  } else {
    say(`the services run from the bundles in ${bundleDirectory}${bundles.state === 'outdated' ? ` although ${bundles.reason}` : ''}`);
  }
  return runtime;
}

/** Migrates the database and creates the file devices that are missing. */
export async function prepareTopology(topology: Topology, databaseUrl: string, say: (line: string) => void): Promise<void> {
  const db = createDatabase(databaseUrl, { poolMax: 1 });
  try {
    if ((await pendingMigrations(db)).length > 0) await allowTypeScriptImports();
    const applied = await migrateToLatest(db);
    if (applied.length > 0) say(`applied migrations: ${applied.join(', ')}`);
  } finally {
    await db.destroy();
  }
  for (const system of topology.storage_systems) {
    if (system.backend !== 'file' || !system.device_root) continue;
    for (const device of system.devices) await provisionFileDevice(system.device_root, device);
  }
}

export async function waitUntilReady(spec: ProcessSpec, child: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const client = new JsonClient(spec.url, { name: spec.name, timeoutMs: 2_000, connections: 1 });
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${spec.name} exited during start; see its log`);
      try {
        if ((await client.call('GET', '/readyz')).status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`${spec.name} was not ready at ${spec.url} within ${timeoutMs / 1000} s`);
  } finally {
    await client.close();
  }
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(killer);
}

/** Waits until every server lists all the agents the topology configures for it. */
export async function waitForAgents(topology: Topology, adminToken: string, timeoutMs = 30_000): Promise<{ expected: number; registered: number }> {
  const expectedFor = (serverId: string) =>
    topology.storage_systems.reduce((sum, system) => sum + system.clusters.filter((cluster) => cluster.servers.includes(serverId)).length, 0);
  const expected = topology.servers.reduce((sum, server) => sum + expectedFor(server.id), 0);
  const deadline = Date.now() + timeoutMs;
  let registered = 0;
  while (Date.now() < deadline) {
    registered = 0;
    for (const server of topology.servers) {
      const client = new JsonClient(server.url, { name: `server ${server.id}`, connections: 1, headers: { authorization: `Bearer ${adminToken}` } });
      try {
        const response = await client.call<{ items: unknown[] }>('GET', '/v1/agents?state=active&limit=500');
        if (response.status === 200) registered += response.body.items.length;
      } catch {
        // counted as none
      } finally {
        await client.close();
      }
    }
    if (registered >= expected) break;
    await sleep(200);
  }
  return { expected, registered };
}

/**
 * The admin token the servers take: ADMIN_TOKEN when set, else the one kept in the topology's
 * admin_token_file, made (and said once) at the first start. The file is readable by its owner only.
 */
export function adminTokenFor(topology: Topology, env: NodeJS.ProcessEnv = process.env): { token: string; made: boolean } {
  if (env.ADMIN_TOKEN) return { token: env.ADMIN_TOKEN, made: false };
  if (existsSync(topology.admin_token_file)) return { token: readFileSync(topology.admin_token_file, 'utf8').trim(), made: false };
  const token = `dpx_${randomBytes(32).toString('base64url')}`;
  mkdirSync(dirname(topology.admin_token_file), { recursive: true });
  writeFileSync(topology.admin_token_file, `${token}\n`, { mode: 0o600 });
  return { token, made: true };
}
