/**
 * What the benchmark reads from Postgres: whether the topology is back in its steady state
 * before a trial, and, after a trial, the moments that explain where its time went.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Database } from '@duplex/shared';

export interface Milestone {
  /** Milliseconds since the fault was injected (negative: before it). */
  ms: number;
  what: string;
}

interface IdentityRow {
  name: string;
  pid: number | null;
  state: string;
  started_at: Date;
}

interface AgentRow {
  id: string;
  server_id: string;
  cluster_id: string;
  pid: number;
  incarnation: number;
  /** When the agent process started, as the agent itself reported it. */
  started_at: Date;
  registered_at: Date;
  lease_expires_at: Date;
}

interface HistoryRow {
  state: string;
  attempt: number;
  agent_id: string | null;
  at: Date;
}

interface EventRow {
  type: string;
  task_id: string | null;
  payload: Record<string, unknown>;
  created_at: Date;
}

export async function agentIdentity(db: Database, name: string): Promise<IdentityRow | undefined> {
  const row: IdentityRow | undefined = await db('agent_identities').where({ name }).first('name', 'pid', 'state', 'started_at');
  return row;
}

/** The registration a server holds for the agent named `name` (e.g. ss1-c0-A); each agent registers with one server. */
export async function agentRegistration(db: Database, name: string): Promise<AgentRow | undefined> {
  const row: AgentRow | undefined = await db('agents')
    .where({ name })
    .first('id', 'server_id', 'cluster_id', 'pid', 'incarnation', 'started_at', 'registered_at', 'lease_expires_at');
  return row;
}

export interface ProcInfo {
  pid: number;
  ppid: number;
  /** The process's first argument: the executable. */
  exe: string;
  /** Every argument, the executable first. */
  argv: string[];
  state: string;
  environment: Map<string, string>;
}

/** What /proc says about a process; undefined when it is gone or not readable. Linux only. */
export function procInfo(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const environment = new Map<string, string>();
    for (const entry of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
      const equals = entry.indexOf('=');
      if (equals > 0) environment.set(entry.slice(0, equals), entry.slice(equals + 1));
    }
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (argv.at(-1) === '') argv.pop();
    return { pid, ppid: Number(fields[1]), exe: argv[0] ?? '', argv, state: fields[0] ?? '', environment };
  } catch {
    return undefined;
  }
}

/**
 * Every process this benchmark started, directly or not, is marked: the benchmark gives the
 * harness a private TMPDIR, and each process inherits it (the environment in /proc is the one
 * the process was started with). Zombies are left out.
 */
export interface OwnedProcess {
  pid: number;
  ppid: number;
  /** A Node process (servers, drivers, cluster-managers, agents), not Postgres or esbuild. */
  node: boolean;
  /** For agents and spare agents: the cluster whose manager launched it. */
  clusterId: string | undefined;
  /** AGENT_NAME as the process was started with it; a spare agent gets its name later, over IPC. */
  agentName: string | undefined;
}

export function scanOwnedProcesses(marker: string, managerUrls: Map<string, string>): OwnedProcess[] {
  const clusterOf = new Map([...managerUrls].map(([clusterId, url]) => [url, clusterId]));
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry));
  } catch {
    return [];
  }
  const found: OwnedProcess[] = [];
  for (const entry of entries) {
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const info = procInfo(pid);
    if (!info || info.environment.get('TMPDIR') !== marker || info.state === 'Z' || info.state === 'X') continue;
    const url = info.environment.get('CLUSTER_MANAGER_URL');
    found.push({
      pid,
      ppid: info.ppid,
      node: info.exe === process.execPath,
      clusterId: url === undefined ? undefined : clusterOf.get(url),
      agentName: info.environment.get('AGENT_NAME'),
    });
  }
  return found;
}

/** Whether `pid` is a live agent process (or a spare that became one) of this benchmark in the cluster whose manager is at `managerUrl`. */
export function isAgentProcess(pid: number, marker: string, managerUrl: string): boolean {
  const info = procInfo(pid);
  return info !== undefined && info.state !== 'Z' && info.exe === process.execPath && info.environment.get('TMPDIR') === marker && info.environment.get('CLUSTER_MANAGER_URL') === managerUrl;
}

/**
 * The live process of the named agent, from its registration (the pid the agent reported
 * itself), checked against /proc so that a recycled pid is never signalled. The
 * cluster-manager's agent_identities row is not used: it can be stale (see the README).
 */
export async function agentProcess(db: Database, name: string, marker: string, managerUrl: string): Promise<AgentRow | undefined> {
  const registration = await agentRegistration(db, name);
  return registration && isAgentProcess(registration.pid, marker, managerUrl) ? registration : undefined;
}

/**
 * How long the named agent has been running as far as its cluster-manager is concerned
 * (agent_identities.started_at: when it launched the process, or handed a spare the
 * identity; the same moment its crash-loop backoff counts from), in ms. Undefined unless the
 * stored identity, the registration and /proc agree on one live, registered process.
 */
export async function agentUptime(db: Database, name: string, marker: string, managerUrl: string, now: number): Promise<number | undefined> {
  const registration = await agentProcess(db, name, marker, managerUrl);
  const identity = await agentIdentity(db, name);
  if (!registration || registration.lease_expires_at.getTime() <= now) return undefined;
  if (!identity || identity.state !== 'running' || identity.pid !== registration.pid) return undefined;
  return now - identity.started_at.getTime();
}

/** How long ago the process started, from /proc (Linux clock ticks are 100 a second). */
export function processAgeMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const uptimeSeconds = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    return Number.isFinite(startTicks) && Number.isFinite(uptimeSeconds) ? Math.round(uptimeSeconds * 1000 - startTicks * 10) : undefined;
  } catch {
    return undefined;
  }
}

export async function openTaskCount(db: Database): Promise<number> {
  const rows: { count: string | number }[] = await db('tasks').whereIn('state', ['queued', 'dispatched', 'running']).count('* as count');
  return Number(rows[0]?.count ?? 0);
}

export async function serverLeaseExpiry(db: Database, serverId: string): Promise<Date | undefined> {
  const row: { lease_expires_at: Date } | undefined = await db('servers').where({ id: serverId }).first('lease_expires_at');
  return row?.lease_expires_at;
}

export async function clusterLeaseExpiry(db: Database, storageSystemId: string, clusterId: string): Promise<Date | undefined> {
  const row: { lease_expires_at: Date | null } | undefined = await db('clusters').where({ storage_system_id: storageSystemId, id: clusterId }).first('lease_expires_at');
  return row?.lease_expires_at ?? undefined;
}

/** When the server last stored an inventory report for the cluster. */
export async function inventoryReportedAt(db: Database, serverId: string, storageSystemId: string, clusterId: string): Promise<Date | undefined> {
  const row: { reported_at: Date } | undefined = await db('server_inventories')
    .where({ server_id: serverId, storage_system_id: storageSystemId, cluster_id: clusterId })
    .first('reported_at');
  return row?.reported_at;
}

const at = (date: Date, t0: number): number => date.getTime() - t0;

/** The task's state changes, as its history recorded them. */
export async function taskMilestones(db: Database, taskId: string, t0: number): Promise<Milestone[]> {
  const rows: HistoryRow[] = await db('task_history').where({ task_id: taskId }).orderBy('id').select('state', 'attempt', 'agent_id', 'at');
  return rows.map((row) => ({ ms: at(row.at, t0), what: `task ${row.state} (attempt ${row.attempt}${row.agent_id ? `, ${row.agent_id}` : ''})` }));
}

/** Topology events (registrations, failovers, inventory versions) between t0 and `until`. */
export async function topologyMilestones(db: Database, t0: number, until: number): Promise<Milestone[]> {
  const rows: EventRow[] = await db('events')
    .whereIn('type', ['agent.registered', 'cluster.failover', 'cluster.failback', 'inventory.changed'])
    .where('created_at', '>=', new Date(t0))
    .where('created_at', '<=', new Date(until))
    .orderBy('id')
    .select('type', 'task_id', 'payload', 'created_at');
  return rows.map((row) => {
    const p = row.payload;
    const detail =
      row.type === 'agent.registered'
        ? `${String(p.agent_id)} incarnation ${String(p.incarnation)}`
        : row.type === 'inventory.changed'
          ? `${String(p.cluster_id)} v${String(p.version)} (${String(p.cause)})`
          : JSON.stringify(p);
    return { ms: at(row.created_at, t0), what: `${row.type} ${detail}` };
  });
}

export function milestone(date: Date | undefined, t0: number, what: string): Milestone[] {
  return date ? [{ ms: at(date, t0), what }] : [];
}
