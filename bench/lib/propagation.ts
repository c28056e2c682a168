/**
 * The change-propagation cases. Each trial starts from a device both servers show in the
 * state before the change, makes one change (a FAILED marker written into or removed from a
 * device directory, found by the driver's probe; or an operator's set-state through server A),
 * and polls both servers' GET of the device until each shows it. The figure is the time from
 * the change until the later of the two answers that showed it.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep, type Device, type ServerClient } from './api.ts';
import { storageSystemId, type BenchContext } from './faults.ts';
import type { LogLine } from './logs.ts';
import type { MeasuredTrial, Target } from './report.ts';
import { settingValue, type TimingSetting } from './settings.ts';

/** A device of c0 that the driver's probe finds FAILED and then healthy again. */
export const probedDevice = 'd1';
/** A device of c0 that an operator takes offline and puts back. */
export const operatedDevice = 'd2';

export const caseIds = ['probe-failed', 'probe-cleared', 'operator-offline', 'operator-available', 'lost-broadcast-failed', 'lost-broadcast-cleared'] as const;
export type CaseId = (typeof caseIds)[number];

/** The cases run on a topology whose broadcasts arrive, then those run where the cluster-managers drop every broadcast. */
export const deliveredRound: CaseId[] = ['probe-failed', 'probe-cleared', 'operator-offline', 'operator-available'];
export const droppedRound: CaseId[] = ['lost-broadcast-failed', 'lost-broadcast-cleared'];

export interface PropagationContext extends Pick<BenchContext, 'harness' | 'servers' | 'runId' | 'trialTimeoutMs' | 'logs'> {
  probeIntervalMs: number;
  /** The pause between one answer and the next GET of the same server. */
  pollIntervalMs: number;
}

/** When one server first answered with the change. */
export interface Sighting {
  /** Change → the answer showing it arrived (this process's clock). */
  seen_ms: number;
  /** Change → the server stored the report that carried it (its `reported_at`, set by Postgres on this host's clock). */
  reported_ms: number;
  inventory_version: number;
  polls: number;
}

export interface PropagationResult extends MeasuredTrial {
  case: CaseId;
  device: string;
  /** Change → both servers showed it (the later of the two sightings). */
  ms: number | null;
  changed_at: string | null;
  /** Operator cases: send → server A's answer to set-state. */
  request_ms: number | null;
  seen: { A: Sighting | null; B: Sighting | null };
  /** Broadcasts the cluster-managers dropped on purpose during the trial (FAULT_DROP_BROADCAST_RATE). */
  broadcasts_dropped: number;
  load_avg_1m: number | null;
  log_lines: LogLine[];
  notes: string[];
}

export function emptyResult(caseId: CaseId, trial: number): PropagationResult {
  return {
    case: caseId,
    trial,
    ok: false,
    ms: null,
    error: null,
    phases: {},
    device: caseId.startsWith('operator') ? operatedDevice : probedDevice,
    changed_at: null,
    request_ms: null,
    seen: { A: null, B: null },
    broadcasts_dropped: 0,
    load_avg_1m: null,
    log_lines: [],
    notes: [],
  };
}

export function propagationTargets(settings: TimingSetting[]): Record<CaseId, Target> {
  const probe = settingValue(settings, 'DRIVER_PROBE_INTERVAL_MS');
  const heartbeat = settingValue(settings, 'AGENT_HEARTBEAT_INTERVAL_MS');
  const healed: Target = { text: `p99 < probe interval + heartbeat interval + 1 s = ${(probe + heartbeat + 1_000) / 1000} s`, p99BelowMs: probe + heartbeat + 1_000 };
  const withinASecond: Target = { text: 'p99 < 1 s', p99BelowMs: 1_000 };
  return {
    'probe-failed': withinASecond,
    'probe-cleared': withinASecond,
    'operator-offline': withinASecond,
    'operator-available': withinASecond,
    'lost-broadcast-failed': healed,
    'lost-broadcast-cleared': healed,
  };
}

/** One change: what it looks like before and after in a server's answer, and how to make it. */
interface Change {
  before: (device: Device) => boolean;
  after: (device: Device) => boolean;
  /** Makes the change; resolves when the maker is done with it (the operator's answer). */
  make: () => Promise<void>;
}

function changeFor(ctx: PropagationContext, caseId: CaseId, trial: number, result: PropagationResult): Change {
  const token = `bench ${ctx.runId} ${caseId} #${trial}`;
  const marker = join(ctx.harness.deviceRoot, probedDevice, 'FAILED');
  const markedFailed = (device: Device): boolean => device.state === 'unavailable' && (device.reason ?? '').includes('marked FAILED');
  const available = (device: Device): boolean => device.state === 'available';
  switch (caseId) {
    case 'probe-failed':
    case 'lost-broadcast-failed':
      return {
        before: available,
        // The reason is the marker's first line, so a sighting is of this trial's marker and no other.
        after: (device) => markedFailed(device) && (device.reason ?? '').includes(token),
        make: async () => writeFileSync(marker, `${token}\n`),
      };
    case 'probe-cleared':
    case 'lost-broadcast-cleared':
      return { before: markedFailed, after: available, make: async () => rmSync(marker) };
    case 'operator-offline':
    case 'operator-available': {
      const state = caseId === 'operator-offline' ? 'offline' : 'available';
      return {
        before: state === 'offline' ? available : (device) => device.state === 'offline',
        after: state === 'offline' ? (device) => device.state === 'offline' && device.reason === token : available,
        make: async () => {
          const sent = Date.now();
          await ctx.servers.A.setDeviceState(storageSystemId, operatedDevice, state === 'offline' ? { state, reason: token } : { state });
          result.request_ms = Date.now() - sent;
        },
      };
    }
  }
}

/** Polls one server's GET of the device until `shows` holds or the deadline (a Date.now() value) passes. */
async function watch(
  server: ServerClient,
  deviceId: string,
  shows: (device: Device) => boolean,
  t0: number,
  deadline: number,
  intervalMs: number,
): Promise<{ sighting: Sighting | undefined; last: string }> {
  let polls = 0;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const device = await server.device(storageSystemId, deviceId);
      polls += 1;
      if (shows(device)) {
        return {
          sighting: { seen_ms: Date.now() - t0, reported_ms: Date.parse(device.reported_at) - t0, inventory_version: device.inventory_version, polls },
          last: '',
        };
      }
      last = `${device.state}${device.reason ? ` (${device.reason})` : ''} at inventory version ${device.inventory_version}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(intervalMs);
  }
  return { sighting: undefined, last };
}

/** Waits until both servers show the state before the change; false when they do not within the timeout. */
async function steady(ctx: PropagationContext, deviceId: string, before: (device: Device) => boolean): Promise<boolean> {
  const deadline = Date.now() + ctx.trialTimeoutMs;
  const both = [ctx.servers.A, ctx.servers.B].map((server) => watch(server, deviceId, before, Date.now(), deadline, 50));
  const [a, b] = await Promise.all(both);
  return a?.sighting !== undefined && b?.sighting !== undefined;
}

async function versionRecordedAt(ctx: PropagationContext, clusterId: string, version: number): Promise<Date | undefined> {
  const row: { recorded_at: Date } | undefined = await ctx.harness
    .db('inventory_versions')
    .where({ storage_system_id: storageSystemId, cluster_id: clusterId, version })
    .first('recorded_at');
  return row?.recorded_at;
}

/** Runs one trial of a case, from the steady state before the change to both servers showing it. */
export async function runTrial(ctx: PropagationContext, caseId: CaseId, trial: number): Promise<PropagationResult> {
  const result = emptyResult(caseId, trial);
  const change = changeFor(ctx, caseId, trial, result);
  if (!(await steady(ctx, result.device, change.before))) {
    result.error = `the trial could not run: the servers did not both show ${result.device} in its state before the change within ${ctx.trialTimeoutMs} ms`;
    return result;
  }
  // Start at a random moment of the probe cycle, so that the trials sample all of it rather
  // than falling into step with the probes.
  await sleep(Math.random() * ctx.probeIntervalMs);
  const t0 = Date.now();
  const deadline = t0 + ctx.trialTimeoutMs;
  const making = change.make().then(
    () => undefined,
    (error: unknown) => (error as Error).message,
  );
  const [a, b, refused] = await Promise.all([
    watch(ctx.servers.A, result.device, change.after, t0, deadline, ctx.pollIntervalMs),
    watch(ctx.servers.B, result.device, change.after, t0, deadline, ctx.pollIntervalMs),
    making,
  ]);
  result.changed_at = new Date(t0).toISOString();
  result.seen = { A: a.sighting ?? null, B: b.sighting ?? null };
  const missing = [a.sighting ? [] : [`server A never showed it (last: ${a.last})`], b.sighting ? [] : [`server B never showed it (last: ${b.last})`]].flat();
  if (refused !== undefined) result.error = `the change could not be made: ${refused}`;
  else if (missing.length > 0) result.error = `not shown within ${ctx.trialTimeoutMs} ms: ${missing.join('; ')}`;
  if (a.sighting && b.sighting) {
    result.ok = refused === undefined;
    result.ms = Math.max(a.sighting.seen_ms, b.sighting.seen_ms);
    result.phases = { at_A: a.sighting.reported_ms, at_B: b.sighting.reported_ms, seen_A: a.sighting.seen_ms, seen_B: b.sighting.seen_ms, seen_by_both: result.ms };
    const version = Math.min(a.sighting.inventory_version, b.sighting.inventory_version);
    const recorded = await versionRecordedAt(ctx, 'c0', version);
    if (recorded) result.phases.stored = recorded.getTime() - t0;
  }
  if (result.request_ms !== null) result.phases.answered = result.request_ms;
  await sleep(150); // let the processes' last lines reach their files
  const until = t0 + (result.ms ?? ctx.trialTimeoutMs);
  result.log_lines = ctx.logs.take(t0, t0 - 100, until + 100, 100);
  noteLogPhases(result);
  return result;
}

/**
 * From the logs: c0's driver finding the change (c1's driver watches the same device folder
 * and logs it too, but only c0's manager stores it), the broadcasts dropped on purpose, and
 * each c0 agent finding on its heartbeat that it missed a version.
 */
function noteLogPhases(result: PropagationResult): void {
  const first = (predicate: (line: LogLine) => boolean) => result.log_lines.find((line) => line.ms >= 0 && predicate(line))?.ms;
  const probed = first((line) => line.msg === 'the devices changed' && line.detail.includes('"cluster":"c0"') && line.detail.includes(`"${result.device} `));
  if (probed !== undefined) result.phases.probed = probed;
  result.broadcasts_dropped = result.log_lines.filter((line) => line.ms >= 0 && line.msg === 'broadcast dropped (fault injection)').length;
  for (const server of ['A', 'B'] as const) {
    const healed = first((line) => line.service === `agent-ss1-c0-${server}` && line.msg.startsWith('the cluster-manager holds a newer inventory than reported'));
    if (healed !== undefined) result.phases[`heartbeat_${server}`] = healed;
  }
}

/** One GET of the device at both servers at once, when nothing changes: the least a sighting can cost. */
export async function pollingFloor(ctx: PropagationContext, samples: number): Promise<number[]> {
  const values: number[] = [];
  for (let index = 0; index < samples; index += 1) {
    const started = performance.now();
    await Promise.all([ctx.servers.A.device(storageSystemId, probedDevice), ctx.servers.B.device(storageSystemId, probedDevice)]);
    values.push(performance.now() - started);
    await sleep(ctx.pollIntervalMs);
  }
  return values;
}
