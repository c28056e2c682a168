/**
 * The local topology as a user runs it: `npm start` in the repository (the build, then the
 * bundled `duplex up`), with the shape of topology.yaml (servers A and B; storage system ss1
 * with clusters c0 and c1, four file devices each; an embedded Postgres), but on free ports and
 * in a folder of its own. The baseline is the run command as it was before the bundles:
 * `node --import tsx packages/cli/src/main.ts up`, every process from its TypeScript sources.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServiceRuntime } from '@duplex/shared';
import { bearer, freePort, repositoryRoot, testAdminToken } from '@duplex/testkit';
import { sleep } from './api.ts';
import { procInfo, scanOwnedProcesses } from './probe.ts';

export type ServiceRole = 'server' | 'cluster-manager' | 'agent' | 'driver';

export interface LocalTopology {
  directory: string;
  file: string;
  servers: { id: string; url: string }[];
  /** The processes `duplex up` starts itself, each with the URL it answers /readyz on. */
  started: { name: string; role: Exclude<ServiceRole, 'agent'>; url: string }[];
  devices: string[];
  /** Agents the topology configures: one per cluster and server. */
  agents: number;
}

/** Writes topology.yaml (as JSON, which is YAML) into `directory`, on free ports. */
export async function writeLocalTopology(directory: string): Promise<LocalTopology> {
  mkdirSync(directory, { recursive: true });
  const url = async () => `http://127.0.0.1:${await freePort()}`;
  const servers = [
    { id: 'A', url: await url() },
    { id: 'B', url: await url() },
  ];
  const clusters = [];
  for (const id of ['c0', 'c1']) clusters.push({ id, manager_url: await url(), driver_url: await url(), servers: servers.map((server) => server.id) });
  const devices = Array.from({ length: 8 }, (_, index) => ({ id: `d${index}`, home_cluster: index < 4 ? 'c0' : 'c1', capacity_bytes: 1024 ** 3 }));
  const document = {
    servers,
    storage_systems: [{ id: 'ss1', backend: 'file', device_root: 'devices/ss1', devices, clusters }],
    postgres: { port: await freePort(), data_dir: 'postgres' },
    logs_dir: 'logs',
  };
  const file = join(directory, 'topology.yaml');
  writeFileSync(file, `${JSON.stringify(document, null, 2)}\n`);
  return {
    directory,
    file,
    servers,
    started: [
      ...clusters.map((cluster) => ({ name: `driver-${cluster.id}`, role: 'driver' as const, url: cluster.driver_url })),
      ...servers.map((server) => ({ name: `server-${server.id}`, role: 'server' as const, url: server.url })),
      ...clusters.map((cluster) => ({ name: `cluster-manager-${cluster.id}`, role: 'cluster-manager' as const, url: cluster.manager_url })),
    ],
    devices: devices.map((device) => device.id),
    agents: clusters.length * servers.length,
  };
}

/** A service process of a running topology, named as the topology names it. */
export interface ServiceProcessInfo {
  pid: number;
  name: string;
  role: ServiceRole;
  runtime: ServiceRuntime;
  /** A spare agent: loaded and waiting for the identity of an agent that dies. */
  spare: boolean;
}

const servicePattern = /(?:dist\/(server|cluster-manager|agent|driver)\.mjs|packages\/(server|cluster-manager|agent|driver)\/src\/server\.ts)$/;

/** What a process of the topology is, from its command line and environment; undefined for anything else (npm, Postgres). */
function describe(pid: number): ServiceProcessInfo | { pid: number; name: 'launcher' | 'postgres' } | undefined {
  const info = procInfo(pid);
  if (!info || info.state === 'Z') return undefined;
  if (info.argv.some((arg) => arg.endsWith('packages/cli/src/main.ts') || arg.endsWith('packages/cli/dist/duplex.mjs'))) return { pid, name: 'launcher' };
  if (/(^|\/)postgres(:|$)/.test(info.exe)) return { pid, name: 'postgres' };
  const match = info.argv.map((arg) => servicePattern.exec(arg)).find((found) => found !== null);
  if (!match) return undefined;
  const role = (match[1] ?? match[2]) as ServiceRole;
  const env = info.environment;
  const spare = role === 'agent' && env.get('AGENT_STANDBY') === '1';
  const name = {
    server: `server-${env.get('SERVER_ID')}`,
    'cluster-manager': `cluster-manager-${env.get('CLUSTER_ID')}`,
    driver: `driver-${env.get('DRIVER_CLUSTER_ID')}`,
    agent: spare ? `agent-spare-${env.get('CLUSTER_ID')}` : `agent-${env.get('AGENT_NAME')}`,
  }[role];
  return { pid, name, role, runtime: match[1] ? 'bundle' : 'source', spare };
}

/** The descendants of `root`, from /proc (Linux only). */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const owned of scanAll()) children.set(owned.ppid, [...(children.get(owned.ppid) ?? []), owned.pid]);
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

function scanAll(): { pid: number; ppid: number }[] {
  const rows: { pid: number; ppid: number }[] = [];
  for (const entry of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      rows.push({ pid: Number(entry), ppid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) });
    } catch {
      // gone meanwhile
    }
  }
  return rows;
}

/**
 * CPU time (user + system) a process and the children it has reaped have used, in ms. Linux
 * counts in ticks of 10 ms (USER_HZ 100).
 */
function cpuWithReapedChildrenMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * 10;
  } catch {
    return 0;
  }
}

export interface StartTimes {
  /** The command → every configured agent registered (active) with its server. */
  ready_ms: number;
  /**
   * CPU time the run used until then, by what used it (services by role, spare agents, the
   * launcher, Postgres, and `other`: npm, the shell and the build step). Unlike the wall time it
   * hardly depends on what else the machine runs; on a machine of N idle cores the start takes at
   * least total / N.
   */
  cpu_ms: Record<string, number>;
  /** The command → every process of the role answered /readyz with 200. */
  drivers_ready_ms: number | null;
  servers_ready_ms: number | null;
  cluster_managers_ready_ms: number | null;
  /** `npm start` bundled the services during this start (the bundles were out of date). */
  built: boolean;
}

/** The command a user runs: `npm start` for the bundles; for the sources, the start script as it was before them. */
export function runCommand(runtime: ServiceRuntime, topologyFile: string): string[] {
  return runtime === 'bundle'
    ? ['npm', 'start', '--', '--topology', topologyFile]
    : [process.execPath, '--import', 'tsx', 'packages/cli/src/main.ts', 'up', '--topology', topologyFile];
}

/** One start of a local topology, from the command to Ctrl-C. */
export class LocalTopologyRun {
  private readonly child: ChildProcess;
  private readonly startedAt = performance.now();
  private readonly exited: Promise<void>;
  private readonly seen = new Set<number>();

  constructor(
    readonly topology: LocalTopology,
    readonly runtime: ServiceRuntime,
    readonly logFile: string,
  ) {
    const { DATABASE_URL: _ignored, ...env } = process.env;
    const log = openSync(logFile, 'a');
    // As a user does: no DATABASE_URL (so the embedded Postgres), in its own process group so
    // that stop() can send Ctrl-C's SIGINT to the whole group.
    const [command, ...args] = runCommand(runtime, topology.file);
    this.child = spawn(command!, args, {
      cwd: repositoryRoot,
      // The benchmark's load goes in with this admin token, which the servers take from the launcher.
      env: { ...env, DUPLEX_RUNTIME: runtime, ADMIN_TOKEN: testAdminToken },
      stdio: ['ignore', log, log],
      detached: true,
    });
    closeSync(log);
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Polls every 50 ms until every agent is registered; each role's milestone is its first all-ready poll. */
  async waitUntilReady(timeoutMs: number): Promise<StartTimes> {
    const deadline = this.startedAt + timeoutMs;
    const readyAt = new Map<string, number>();
    const roleReady = (role: string) => {
      const members = this.topology.started.filter((process) => process.role === role);
      const times = members.map((process) => readyAt.get(process.name));
      return times.every((time) => time !== undefined) ? Math.max(...(times as number[])) : null;
    };
    while (performance.now() < deadline) {
      if (!this.running) throw new Error(`the run command ended before the topology was up:\n${this.logTail()}`);
      await Promise.all(
        this.topology.started
          .filter((process) => !readyAt.has(process.name))
          .map(async (process) => {
            if ((await status(`${process.url}/readyz`)) === 200) readyAt.set(process.name, performance.now() - this.startedAt);
          }),
      );
      if ((await this.activeAgents()) >= this.topology.agents) {
        const readyMs = performance.now() - this.startedAt;
        this.remember();
        return {
          ready_ms: readyMs,
          cpu_ms: this.cpuByKind(),
          drivers_ready_ms: roleReady('driver'),
          servers_ready_ms: roleReady('server'),
          cluster_managers_ready_ms: roleReady('cluster-manager'),
          built: /build: .*bundled/.test(this.logTail(200)),
        };
      }
      await sleep(50);
    }
    throw new Error(`the topology was not up within ${timeoutMs} ms:\n${this.logTail()}`);
  }

  /** Active agent registrations over both servers, with each agent's URL by pid. */
  async agentUrls(): Promise<Map<number, string>> {
    const urls = new Map<number, string>();
    for (const server of this.topology.servers) {
      const body = await json<{ items: { pid: number; url: string }[] }>(`${server.url}/v1/agents?state=active&limit=500`);
      for (const agent of body?.items ?? []) urls.set(agent.pid, agent.url);
    }
    return urls;
  }

  private async activeAgents(): Promise<number> {
    return (await this.agentUrls()).size;
  }

  /** The service processes running now (servers, cluster-managers, agents and spares, drivers), and the launcher and Postgres. */
  processes(): { services: ServiceProcessInfo[]; launcher: number[]; postgres: number[] } {
    const services: ServiceProcessInfo[] = [];
    const launcher: number[] = [];
    const postgres: number[] = [];
    for (const pid of this.remember()) {
      const what = describe(pid);
      if (!what) continue;
      if (what.name === 'launcher') launcher.push(pid);
      else if (what.name === 'postgres') postgres.push(pid);
      else services.push(what as ServiceProcessInfo);
    }
    return { services: services.sort((a, b) => a.name.localeCompare(b.name)), launcher, postgres };
  }

  private cpuByKind(): Record<string, number> {
    const root = this.child.pid;
    if (!root) return {};
    const byKind: Record<string, number> = { total: 0 };
    for (const pid of [root, ...descendants(root)]) {
      const what = describe(pid);
      const kind = !what ? 'other' : 'role' in what ? (what.spare ? 'spare agent' : what.role) : what.name;
      const ms = cpuWithReapedChildrenMs(pid);
      byKind[kind] = (byKind[kind] ?? 0) + ms;
      byKind.total = (byKind.total ?? 0) + ms;
    }
    return byKind;
  }

  private remember(): number[] {
    const pids = this.child.pid ? descendants(this.child.pid) : [];
    for (const pid of pids) this.seen.add(pid);
    return pids;
  }

  /**
   * Ctrl-C: SIGINT to the whole process group, as a terminal sends it. Resolves once npm has
   * exited, with the processes of the run still alive a moment later (killed, and reported).
   */
  async stop(marker: string, timeoutMs = 30_000): Promise<{ stop_ms: number; leftovers: string[] }> {
    const startedAt = performance.now();
    this.remember();
    if (this.running && this.child.pid) process.kill(-this.child.pid, 'SIGINT');
    const timedOut = await Promise.race([this.exited.then(() => false), sleep(timeoutMs).then(() => true)]);
    const stopMs = performance.now() - startedAt;
    if (timedOut && this.child.pid) killQuietly(-this.child.pid);
    await sleep(500);
    const leftovers: string[] = [];
    const alive = new Set([...this.seen].filter((pid) => procInfo(pid) !== undefined));
    for (const owned of scanOwnedProcesses(marker, new Map())) alive.add(owned.pid);
    for (const pid of alive) {
      const info = procInfo(pid);
      if (!info || info.state === 'Z') continue;
      leftovers.push(`${pid} ${info.argv.join(' ').slice(0, 120)}`);
      killQuietly(pid);
    }
    if (timedOut) leftovers.unshift(`the run command did not exit within ${timeoutMs} ms of SIGINT`);
    return { stop_ms: stopMs, leftovers };
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function status(url: string): Promise<number | null> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return null;
  }
}

/** A GET of a server's API, with the admin token the run's servers take. */
async function json<T>(url: string): Promise<T | undefined> {
  try {
    const response = await fetch(url, { headers: bearer(testAdminToken), signal: AbortSignal.timeout(1_000) });
    if (response.status !== 200) {
      await response.arrayBuffer();
      return undefined;
    }
    return (await response.json()) as T;
  } catch {
    return undefined;
  }
}
