/**
 * The fault scenarios. Each trial starts from the steady state (both servers ready, four
 * agents with live leases, d0 owned by c0 in both servers' views, no open task), injects
 * one fault, submits or follows the one task the fault affects, and measures from the
 * injection to the commit of that task's `succeeded` (the task's `finished_at`, written by
 * Postgres on the same clock as this process). Then it repairs what it broke.
 */
import { readFileSync } from 'node:fs';
import type { TopologyHarness } from '@duplex/harness';
import { sleep, waitUntil, type ServerClient, type Task, type TaskRequest } from './api.ts';
import type { FaultId } from './args.ts';
import type { LogLine, LogTail } from './logs.ts';
import {
  agentIdentity,
  agentProcess,
  agentRegistration,
  agentUptime,
  clusterLeaseExpiry,
  inventoryReportedAt,
  isAgentProcess,
  milestone,
  openTaskCount,
  processAgeMs,
  scanOwnedProcesses,
  serverLeaseExpiry,
  taskMilestones,
  topologyMilestones,
  type Milestone,
} from './probe.ts';
import { AGENT_STABLE_RUN_MS } from './settings.ts';

export const storageSystemId = 'ss1';
/** A device of c0, so that the task can run only in c0 (or, after a takeover, in c1). */
export const device = 'd0';
/** The agent killed and hung: server A's agent in c0, the only path for A's tasks on d0. */
export const victimAgent = 'ss1-c0-A';
/** Server B's agent in c0, which holds B's task when B crashes. */
export const serverBAgent = 'ss1-c0-B';

export interface BenchContext {
  harness: TopologyHarness;
  servers: { A: ServerClient; B: ServerClient };
  runId: string;
  trialTimeoutMs: number;
  /** Each cluster's manager URL, by cluster id: agents carry it in their environment. */
  managerUrls: Map<string, string>;
  /** The private TMPDIR every process of this benchmark inherits; it tells ours from others' in /proc. */
  marker: string;
  logs: LogTail;
  log(line: string): void;
}

export interface TrialResult {
  fault: FaultId;
  trial: number;
  ok: boolean;
  /** Injection → the task's `succeeded` committed (finished_at). */
  ms: number | null;
  /** Injection → this process first saw `succeeded` (polling every 20 ms). */
  observed_ms: number | null;
  injected_at: string | null;
  task_id: string | null;
  final_state: Task['state'] | null;
  attempt: number | null;
  server_id: string | null;
  cluster_id: string | null;
  agent_id: string | null;
  error: string | null;
  /** Named moments of the failover, in ms since the injection, for the phase table. */
  phases: Record<string, number>;
  milestones: Milestone[];
  /** Agent faults: the age of c0's spare agent process just before the fault (null: none). */
  spare_age_ms: number | null;
  /** The machine's 1-minute load average when the trial began (CPU contention shows in the figures). */
  load_avg_1m: number | null;
  /** The processes' log lines from the injection to the end of the trial (request logs left out). */
  log_lines: LogLine[];
  notes: string[];
}

interface Outcome {
  task: Task | undefined;
  seenAt: number | undefined;
  error: string | undefined;
}

export function emptyResult(fault: FaultId, trial: number): TrialResult {
  return {
    fault,
    trial,
    ok: false,
    ms: null,
    observed_ms: null,
    injected_at: null,
    task_id: null,
    final_state: null,
    attempt: null,
    server_id: null,
    cluster_id: null,
    agent_id: null,
    error: null,
    phases: {},
    milestones: [],
    spare_age_ms: null,
    load_avg_1m: null,
    log_lines: [],
    notes: [],
  };
}

function taskBody(ctx: BenchContext, fault: FaultId, trial: number): { body: TaskRequest; key: string } {
  const name = `bench-${ctx.runId}-${fault}-${trial}`;
  return {
    body: { kind: 'volume.create', storage_system_id: storageSystemId, device, params: { name, size_bytes: 65_536 } },
    key: `bench-${ctx.runId}-${fault}-${trial}`,
  };
}

/** The pid of the running cluster-manager of a cluster, as the harness launched it. */
function managerPid(ctx: BenchContext, clusterId: string): number | undefined {
  const running = ctx.harness.processes.get(`cluster-manager-${storageSystemId}-${clusterId}`);
  return running && running.child.exitCode === null && running.child.signalCode === null ? running.child.pid : undefined;
}

/**
 * Kills agent processes whose cluster-manager is not their parent: orphans of a killed
 * cluster-manager that nobody stopped. Two processes under one agent name take turns
 * re-registering (each one's heartbeat is refused as a stale incarnation), which would
 * spoil every later trial.
 */
function reapOrphans(ctx: BenchContext, result: TrialResult): void {
  for (const owned of scanOwnedProcesses(ctx.marker, ctx.managerUrls)) {
    if (!owned.node || owned.clusterId === undefined || owned.ppid === managerPid(ctx, owned.clusterId)) continue;
    try {
      process.kill(owned.pid, 'SIGKILL');
      result.notes.push(`orphaned ${owned.agentName ? `agent ${owned.agentName}` : 'spare agent'} of ${owned.clusterId} (pid ${owned.pid}, parent ${owned.ppid}) was still running; killed it`);
    } catch {
      // gone meanwhile
    }
  }
}

/** Waits until the topology is in its steady state; `stableAgent` must also have run long enough to be restarted without backoff. */
async function steady(ctx: BenchContext, result: TrialResult, stableAgent?: string): Promise<void> {
  const { harness, servers } = ctx;
  reapOrphans(ctx, result);
  await waitUntil('both servers ready', async () => ((await servers.A.ready()) && (await servers.B.ready()) ? true : undefined), 60_000, 100);
  await harness.waitForAgents(4, 60_000);
  // A lease outlives its process: after a cluster is lost and back, its agents count as active
  // while their registrations still name the killed processes. The trials signal these two by
  // the registered pid, so each must be registered from the process now running.
  for (const name of [victimAgent, serverBAgent]) {
    await waitUntil(
      `agent ${name} to be registered from a live process`,
      async () => ((await agentProcess(harness.db, name, ctx.marker, managerUrl(ctx, name))) ? true : undefined),
      60_000,
      100,
    );
  }
  for (const server of [servers.A, servers.B]) {
    await waitUntil(
      `server ${server.id} to see ${device} owned by c0 and available`,
      async () => {
        const found = (await server.devices(storageSystemId)).find((candidate) => candidate.id === device);
        return found?.owner_cluster === 'c0' && found.state === 'available' ? true : undefined;
      },
      60_000,
      100,
    );
  }
  try {
    await waitUntil('no open task', async () => ((await openTaskCount(harness.db)) === 0 ? true : undefined), 20_000, 100);
  } catch {
    result.notes.push(`${await openTaskCount(harness.db)} task(s) of earlier trials were still open when this trial started`);
  }
  if (stableAgent) {
    await waitUntil(
      `${stableAgent} to have run ${AGENT_STABLE_RUN_MS} ms`,
      async () => {
        const uptime = await agentUptime(harness.db, stableAgent, ctx.marker, managerUrl(ctx, stableAgent), Date.now());
        return uptime !== undefined && uptime >= AGENT_STABLE_RUN_MS + 250 ? true : undefined;
      },
      60_000,
      100,
    );
  }
}

/** ss1-c0-A → c0's manager URL. */
function managerUrl(ctx: BenchContext, agentName: string): string {
  const clusterId = agentName.split('-')[1] ?? '';
  const url = ctx.managerUrls.get(clusterId);
  if (!url) throw new Error(`no cluster-manager for agent ${agentName}`);
  return url;
}

async function livePid(ctx: BenchContext, name: string): Promise<number> {
  const registration = await agentProcess(ctx.harness.db, name, ctx.marker, managerUrl(ctx, name));
  if (!registration) throw new Error(`agent ${name} has no live registered process`);
  return registration.pid;
}

/** Whether the process is stopped (SIGSTOP), from /proc; undefined where /proc cannot tell. */
function isStopped(pid: number): boolean | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T');
  } catch {
    return undefined;
  }
}

function continueIfStopped(pid: number, result: TrialResult): void {
  const stopped = isStopped(pid);
  if (stopped === false) return;
  try {
    process.kill(pid, 'SIGCONT');
    if (stopped) result.notes.push(`process ${pid} was still stopped after the trial; sent SIGCONT`);
  } catch {
    // gone: the cluster-manager killed it
  }
}

async function follow(ctx: BenchContext, server: ServerClient, taskId: string, t0: number): Promise<Outcome> {
  const { task, seenAt, lastError } = await server.waitForEnd(taskId, t0 + ctx.trialTimeoutMs);
  return { task, seenAt, error: lastError };
}

async function submitAndFollow(ctx: BenchContext, server: ServerClient, fault: FaultId, trial: number, t0: number, result: TrialResult): Promise<Outcome> {
  const { body, key } = taskBody(ctx, fault, trial);
  let submitted: Task | undefined;
  // The server itself is healthy in these scenarios; retry a refused connection until the deadline all the same.
  while (!submitted && Date.now() < t0 + ctx.trialTimeoutMs) {
    try {
      submitted = await server.submit(body, key);
    } catch (error) {
      result.notes.push(`submit failed, retrying with the same Idempotency-Key: ${(error as Error).message}`);
      await sleep(50);
    }
  }
  if (!submitted) return { task: undefined, seenAt: undefined, error: 'the task could not be submitted' };
  result.milestones.push({ ms: Date.now() - t0, what: `client got 202 from server ${server.id}` });
  return follow(ctx, server, submitted.id, t0);
}

/** Fills in the measurement and the task's history; a task not succeeded in time fails the trial. */
async function settle(ctx: BenchContext, result: TrialResult, t0: number, outcome: Outcome): Promise<void> {
  const { task } = outcome;
  result.injected_at = new Date(t0).toISOString();
  if (task) {
    result.task_id = task.id;
    result.final_state = task.state;
    result.attempt = task.attempt;
    result.server_id = task.server_id;
    result.cluster_id = task.cluster_id;
    result.agent_id = task.agent_id;
    const history = await taskMilestones(ctx.harness.db, task.id, t0);
    result.milestones.push(...history);
    const dispatches = history.filter((entry) => entry.what.startsWith('task dispatched'));
    const last = dispatches.at(-1);
    if (last) result.phases.dispatched = last.ms;
  }
  if (task?.state === 'succeeded' && task.finished_at && outcome.seenAt !== undefined) {
    result.ok = true;
    result.ms = Date.parse(task.finished_at) - t0;
    result.observed_ms = outcome.seenAt - t0;
    result.phases.succeeded = result.ms;
  } else if (task && task.state !== 'succeeded' && outcome.seenAt !== undefined) {
    result.error = `the task ended ${task.state}: ${JSON.stringify(task.error)}`;
  } else {
    result.error = `no success within ${ctx.trialTimeoutMs} ms of the fault; the task was ${task?.state ?? 'not seen'}${outcome.error ? ` (last error: ${outcome.error})` : ''}`;
  }
  const until = task?.finished_at ? Date.parse(task.finished_at) : Date.now();
  result.milestones.push(...(await topologyMilestones(ctx.harness.db, t0, until)));
  result.milestones.sort((a, b) => a.ms - b.ms);
  await sleep(150); // let the processes' last lines reach their files
  result.log_lines = ctx.logs.take(t0, t0 - 100, until + 100);
}

/**
 * Notes whether c0's cluster-manager had a spare agent (a loaded process without an
 * identity, its child) and how old it was, just before the fault: a crash is replaced from
 * the spare at once, without one the replacement is a cold start.
 */
async function noteSpare(ctx: BenchContext, result: TrialResult): Promise<void> {
  const manager = managerPid(ctx, 'c0');
  // An agent that started as a spare has no AGENT_NAME in /proc either; its registration tells it apart.
  const registered = new Set((await agentPidsByRegistration(ctx.harness)).keys());
  const spares = scanOwnedProcesses(ctx.marker, ctx.managerUrls).filter(
    (owned) => owned.node && owned.clusterId === 'c0' && owned.ppid === manager && owned.agentName === undefined && !registered.has(owned.pid),
  );
  const ages = spares.flatMap((spare) => {
    const age = processAgeMs(spare.pid);
    return age === undefined ? [] : [age];
  });
  result.spare_age_ms = ages.length > 0 ? Math.max(...ages) : null;
}

/**
 * When the victim agent came back, from the logs and its registration: the cluster-manager
 * found it hung, saw it exit, the new process listened, and registered with server A. Also
 * notes when the cluster-manager's stored identity of the agent disagrees with the live process.
 */
async function agentPhases(ctx: BenchContext, result: TrialResult, t0: number): Promise<void> {
  const about = (detail: string) => detail.includes(`"agent":"${victimAgent}"`);
  const first = (predicate: (line: LogLine) => boolean) => result.log_lines.find((line) => line.ms >= 0 && predicate(line))?.ms;
  const hung = first((line) => line.msg.startsWith('agent does not answer its health check') && about(line.detail));
  const exited = first((line) => line.msg.startsWith('agent exited') && about(line.detail));
  const listening = first((line) => line.service === `agent-${victimAgent}` && line.msg.startsWith('Server listening'));
  if (hung !== undefined) result.phases.hang_detected = hung;
  const backoff = result.log_lines.find((line) => line.ms >= 0 && line.msg.startsWith('agent exited') && about(line.detail))?.detail.match(/"restart_in_ms":(\d+)/);
  if (backoff && Number(backoff[1]) > 0) result.notes.push(`the cluster-manager restarted ${victimAgent} after a ${backoff[1]} ms crash-loop backoff`);
  if (exited !== undefined) result.phases.exit_seen = exited;
  if (listening !== undefined) result.phases.listening = listening;
  const registration = await agentRegistration(ctx.harness.db, victimAgent);
  if (registration && registration.registered_at.getTime() >= t0) result.phases.registered = registration.registered_at.getTime() - t0;
  // The registration carries the pid the live agent reported itself; the stored identity should agree.
  const identity = await agentIdentity(ctx.harness.db, victimAgent);
  const url = managerUrl(ctx, victimAgent);
  if (registration && identity && isAgentProcess(registration.pid, ctx.marker, url) && (identity.pid !== registration.pid || identity.state !== 'running')) {
    result.notes.push(`agent_identities is stale: ${victimAgent} stored as ${identity.state} pid ${identity.pid ?? 'null'} while pid ${registration.pid} runs`);
  }
}

type Trial = (ctx: BenchContext, trial: number) => Promise<TrialResult>;

/** No fault: the same task on a healthy topology, the floor every failover adds to. */
const baseline: Trial = async (ctx, trial) => {
  const result = emptyResult('baseline', trial);
  await steady(ctx, result);
  const t0 = Date.now();
  await settle(ctx, result, t0, await submitAndFollow(ctx, ctx.servers.A, 'baseline', trial, t0, result));
  return result;
};

/** SIGKILL A's agent in c0, then submit through A a task on d0: it can run only on that agent, once it is back. */
const agentCrash: Trial = async (ctx, trial) => {
  const result = emptyResult('agent-crash', trial);
  await steady(ctx, result, victimAgent);
  const pid = await livePid(ctx, victimAgent);
  await noteSpare(ctx, result);
  const t0 = Date.now();
  process.kill(pid, 'SIGKILL');
  const outcome = await submitAndFollow(ctx, ctx.servers.A, 'agent-crash', trial, t0, result);
  await settle(ctx, result, t0, outcome);
  await agentPhases(ctx, result, t0);
  return result;
};

/**
 * SIGSTOP A's agent in c0, then submit through A a task on d0. The cluster-manager finds the
 * agent hung (failed /healthz checks) and kills and restarts it; the new agent takes the task.
 */
const agentHang: Trial = async (ctx, trial) => {
  const result = emptyResult('agent-hang', trial);
  await steady(ctx, result, victimAgent);
  const pid = await livePid(ctx, victimAgent);
  await noteSpare(ctx, result);
  const t0 = Date.now();
  process.kill(pid, 'SIGSTOP');
  try {
    const outcome = await submitAndFollow(ctx, ctx.servers.A, 'agent-hang', trial, t0, result);
    await settle(ctx, result, t0, outcome);
    await agentPhases(ctx, result, t0);
  } finally {
    continueIfStopped(pid, result);
  }
  return result;
};

/**
 * Server B holds a dispatched task (its agent in c0 is stopped, so the attempt cannot end);
 * then B and that agent are SIGKILLed together, the way a host failure takes both (claim 5).
 * Server A must adopt the task once B's lease runs out and run it through its own agent.
 */
const serverCrash: Trial = async (ctx, trial) => {
  const result = emptyResult('server-crash', trial);
  await steady(ctx, result);
  const { harness, servers } = ctx;
  const agentPid = await livePid(ctx, serverBAgent);
  const { body, key } = taskBody(ctx, 'server-crash', trial);
  process.kill(agentPid, 'SIGSTOP');
  let held: Task;
  try {
    const submitted = await servers.B.submit(body, key);
    held = await waitUntil(
      `server B to dispatch ${submitted.id} to ${serverBAgent}`,
      async () => {
        const task = await servers.B.task(submitted.id);
        if (task.state === 'queued') return undefined;
        if (task.state !== 'dispatched') throw new Error(`task ${submitted.id} went ${task.state} before the crash`);
        return task;
      },
      3_000,
      5,
    );
  } catch (error) {
    continueIfStopped(agentPid, result);
    result.error = `could not set up the in-flight task: ${(error as Error).message}`;
    return result;
  }
  const t0 = Date.now();
  harness.signal('server-B', 'SIGKILL');
  process.kill(agentPid, 'SIGKILL');
  result.milestones.push({ ms: Date.now() - t0, what: `server B and ${serverBAgent} killed; task ${held.id} was dispatched (attempt ${held.attempt})` });
  try {
    const outcome = await follow(ctx, servers.A, held.id, t0);
    const leaseEnd = await serverLeaseExpiry(harness.db, 'B');
    if (leaseEnd) result.phases.lease_expired = leaseEnd.getTime() - t0;
    result.milestones.push(...milestone(leaseEnd, t0, "server B's lease ran out"));
    await settle(ctx, result, t0, outcome);
    const adopted = result.milestones.find((entry) => entry.ms >= 0 && entry.what.startsWith('task queued'));
    if (adopted) result.phases.adopted = adopted.ms;
  } finally {
    try {
      await harness.restart('server-B');
    } catch (error) {
      result.notes.push(`restarting server B failed: ${(error as Error).message}`);
    }
  }
  return result;
};

/**
 * killCluster('c0') (manager, both agents and driver at once), then submit through A a task
 * on d0. c1's manager takes d0 over once c0's lease ran out and its /healthz fails; the task
 * then runs on A's agent in c1. Afterwards c0 is restarted and failed back.
 */
const clusterLoss: Trial = async (ctx, trial) => {
  const result = emptyResult('cluster-loss', trial);
  await steady(ctx, result);
  const { harness, servers } = ctx;
  // killCluster finds the agents through the cluster-manager's agent_identities rows. Check
  // in /proc that none survived: a survivor keeps serving (and re-registering for) a dead cluster.
  const identities = await harness.agentPids();
  const t0 = Date.now();
  await harness.killCluster('c0');
  try {
    const following = submitAndFollow(ctx, servers.A, 'cluster-loss', trial, t0, result);
    await sleep(100); // SIGKILL is not instant
    const registrations = await agentPidsByRegistration(harness);
    for (const owned of scanOwnedProcesses(ctx.marker, ctx.managerUrls).filter((candidate) => candidate.node && candidate.clusterId === 'c0')) {
      try {
        process.kill(owned.pid, 'SIGKILL');
      } catch {
        continue;
      }
      const name = owned.agentName ?? registrations.get(owned.pid);
      result.notes.push(
        name
          ? `killCluster left agent ${name} (pid ${owned.pid}) alive: agent_identities gave ${identities.has(name) ? `pid ${identities.get(name)}` : 'no pid'}; killed it ${Date.now() - t0} ms after the fault`
          : `killCluster left c0's spare agent (pid ${owned.pid}) alive; killed it ${Date.now() - t0} ms after the fault`,
      );
    }
    const outcome = await following;
    const leaseEnd = await clusterLeaseExpiry(harness.db, storageSystemId, 'c0');
    if (leaseEnd) result.phases.lease_expired = leaseEnd.getTime() - t0;
    result.milestones.push(...milestone(leaseEnd, t0, "c0's lease ran out"));
    const reported = await inventoryReportedAt(harness.db, 'A', storageSystemId, 'c1');
    if (reported && reported.getTime() >= t0) {
      result.phases.inventory_at_server = reported.getTime() - t0;
      result.milestones.push({ ms: result.phases.inventory_at_server, what: "server A stored c1's new inventory" });
    }
    await settle(ctx, result, t0, outcome);
    const takeover = result.milestones.find((entry) => entry.what.startsWith('cluster.failover'));
    if (takeover) result.phases.takeover = takeover.ms;
  } finally {
    await restoreCluster(ctx, result);
  }
  return result;
};

/** Registered agents by the pid they reported. */
async function agentPidsByRegistration(harness: TopologyHarness): Promise<Map<number, string>> {
  const rows: { name: string; pid: number }[] = await harness.db('agents').select('name', 'pid');
  return new Map(rows.map((row) => [row.pid, row.name]));
}

/** Starts c0's driver and manager again and fails c0 back through server A. */
async function restoreCluster(ctx: BenchContext, result: TrialResult): Promise<void> {
  const { harness, servers } = ctx;
  try {
    await harness.restart('driver-ss1-c0');
    await harness.restart('cluster-manager-ss1-c0');
    await harness.waitForAgents(4, 60_000);
    await waitUntil(
      'failback of c0',
      async () => {
        const answer = await servers.A.failBack(storageSystemId, 'c0');
        if (answer.status === 200) return answer.body;
        // 409: c0 is not `recovering` yet (its manager has not renewed its lease since the restart).
        if (answer.status === 409) return undefined;
        throw new Error(`failback answered ${answer.status}: ${JSON.stringify(answer.body)}`);
      },
      30_000,
      200,
    );
  } catch (error) {
    result.notes.push(`restoring c0 failed: ${(error as Error).message}`);
  }
}

export const trials: Record<FaultId, Trial> = {
  baseline,
  'agent-crash': agentCrash,
  'agent-hang': agentHang,
  'server-crash': serverCrash,
  'cluster-loss': clusterLoss,
};

/**
 * The order of one round. Each fault's repair leaves A's agent in c0 freshly started (the
 * agent faults restart it, the cluster loss restarts the whole cluster), and the agent
 * faults must wait until it has run AGENT_STABLE_RUN_MS; the other faults fill that wait.
 */
export const roundOrder: FaultId[] = ['baseline', 'cluster-loss', 'server-crash', 'agent-crash', 'agent-hang'];
