import { KeyedLock, ProblemError, problemDocument, type ProblemDocument } from '@duplex/shared';
import type { DeviceInspection, DeviceLabel, DeviceStore, VolumeEntry } from './device-store.ts';
import { resultOf, type ExecutionRecord, type SettledRecord } from './execution-record.ts';
import { checkEpoch, checkTask } from './fencing.ts';
import { describeError } from './files.ts';
import { devicesOf, parseOperation, type Operation } from './operations.ts';
import type { DeviceReport, DeviceStatus, DriverBackend, ExecutionOutput, ExecutionRequest, ExecutionResult } from './types.ts';
import { defaultUsageMaxAgeMs, inspectionKey, noUsage, UsageCache, usageOf, type VolumeUsage } from './volume-usage.ts';

/** The home cluster reported for a device whose label cannot be read. */
export const unknownHomeCluster = 'unknown';

export interface FaultInjection {
  /** Added to every execution while it holds its device, as if the device were slow. */
  latencyMs?: number;
  /** The fraction (0 to 1) of executions that fail with `device-unavailable` instead of running. */
  failureRate?: number;
  /** The random source for failureRate, replaceable so tests are deterministic. */
  random?: () => number;
}

export interface ExecutorOptions {
  faults?: FaultInjection;
  now?: () => Date;
  /** How long an execution counts on a listing of a device's volumes (see UsageCache); 30 s when omitted. */
  usageMaxAgeMs?: number;
}

type Outcome = Pick<SettledRecord, 'outcome' | 'result' | 'error'>;

/**
 * Where a report's usage comes from. `list`: a listing of the volumes, kept nowhere (the
 * device is not held). `kept`: the usage kept for the device while it still holds, else a
 * listing that is kept. `relist`: a listing that is kept. Only executions, which hold their
 * devices, keep usage.
 */
type UsageSource = 'list' | 'kept' | 'relist';

const unavailableType = problemDocument('device-unavailable', '').type;

/**
 * The volume semantics, written once over any device store: name and parameter checks,
 * fencing, exactly-once replay, capacity, and one execution at a time per device.
 */
export class Executor implements DriverBackend {
  private readonly queue = new KeyedLock();
  private readonly usage: UsageCache;

  constructor(
    readonly store: DeviceStore,
    private readonly options: ExecutorOptions = {},
  ) {
    this.usage = new UsageCache(options.usageMaxAgeMs ?? defaultUsageMaxAgeMs);
  }

  async discover(): Promise<DeviceReport[]> {
    const ids = await this.deviceIds();
    const reports = await Promise.all(ids.sort().map((id) => this.report(id)));
    return reports.filter((report): report is DeviceReport => report !== undefined);
  }

  async scan(): Promise<DeviceStatus[]> {
    const ids = await this.deviceIds();
    const seen = new Map<string, string>();
    const statuses = await Promise.all(
      ids.map(async (id): Promise<DeviceStatus | undefined> => {
        const inspection = await this.store.inspect(id);
        if (!inspection) return undefined;
        seen.set(id, inspectionKey(inspection));
        const { label } = inspection;
        const fault = inspection.fault ?? (label ? null : 'the device has no valid label');
        return {
          id,
          home_cluster: label?.home_cluster ?? unknownHomeCluster,
          capacity_bytes: label?.capacity_bytes ?? 0,
          state: fault === null ? 'available' : 'unavailable',
          reason: fault,
        };
      }),
    );
    // A device that is gone or changed since its volumes were listed may not be the same device.
    this.usage.forgetChanged(seen);
    return statuses.filter((status): status is DeviceStatus => status !== undefined);
  }

  async provision(label: DeviceLabel): Promise<DeviceReport> {
    await this.queue.run([label.id], () => this.store.provision(label));
    return this.probe(label.id);
  }

  async probe(id: string): Promise<DeviceReport> {
    const report = await this.report(id);
    if (!report) throw deviceNotFound(id, 'id');
    return report;
  }

  private async deviceIds(): Promise<string[]> {
    try {
      return (await this.store.deviceIds()).sort();
    } catch (error) {
      throw new ProblemError('not-ready', `the devices cannot be listed (${describeError(error)})`, { cause: error });
    }
  }

  async readiness(): Promise<Record<string, string>> {
    return { devices: await this.store.readiness() };
  }

  async execute(request: ExecutionRequest): Promise<ExecutionResult> {
    const operation = parseOperation(request);
    const deviceIds = devicesOf(request);
    // Whether the devices exist is checked once, holding them: a missing one is refused there.
    return this.queue.run(deviceIds, () => this.executeHoldingDevices(request, operation, deviceIds));
  }

  private async executeHoldingDevices(request: ExecutionRequest, operation: Operation, deviceIds: string[]): Promise<ExecutionResult> {
    let inspections = await this.inspectHeld(request, deviceIds);
    const latency = this.options.faults?.latencyMs ?? 0;
    if (latency > 0) {
      await new Promise((resolve) => setTimeout(resolve, latency));
      // A fault injected meanwhile is seen, as on a device that was slow to answer.
      inspections = await this.inspectHeld(request, deviceIds);
    }

    // A probe lists the volumes, so it reports exactly what is on the device, as discovery does.
    const usageFrom: UsageSource = operation.kind === 'device.probe' ? 'relist' : 'kept';
    const reports = new Map<string, DeviceReport>();
    for (const inspection of inspections) reports.set(inspection.id, await this.reportOf(inspection, usageFrom));
    const unavailable = [...reports.values()].find((report) => report.state === 'unavailable');
    // Nothing can be fenced or recorded on a device that is not there, so this is answered
    // without a record: a retry once the device is back runs the work.
    if (unavailable) {
      if (operation.kind === 'device.probe') {
        return { task_id: request.task_id, outcome: 'succeeded', replayed: false, result: { device: probeSummary(unavailable) } };
      }
      const detail = `device ${unavailable.id} is unavailable: ${unavailable.reason ?? 'unknown reason'}`;
      return { task_id: request.task_id, outcome: 'failed', replayed: false, error: problemDocument('device-unavailable', detail) };
    }

    await this.fence(request, [...reports.values()]);

    const recorded = await this.store.readRecord(request.device, request.task_id);
    if (recorded && recorded.outcome !== 'applying') return this.replay(request, { ...recorded, outcome: recorded.outcome });
    if (recorded && checkTask(recorded.token, request.fencing.token) === 'stale') throw staleToken(request, recorded);

    const injected = this.injectedFailure();
    if (injected) return { task_id: request.task_id, outcome: 'failed', replayed: false, error: injected };

    // The intent is on the device before the work starts: a crash between the work and its
    // record then shows as an intent, and the retry finishes the work instead of failing on it.
    const intent = { task_id: request.task_id, kind: request.kind, device: request.device, attempt: request.attempt, token: request.fencing.token, epoch: request.fencing.epoch };
    const interrupted = recorded !== undefined;
    if (!interrupted && operation.kind !== 'device.probe') {
      await this.store.writeRecord(request.device, { ...intent, outcome: 'applying', recorded_at: (this.options.now?.() ?? new Date()).toISOString() });
    }

    let outcome: Outcome;
    try {
      outcome = { outcome: 'succeeded', result: await this.perform(request.device, operation, reports, interrupted) };
    } catch (error) {
      if (!(error instanceof ProblemError)) throw error;
      outcome = { outcome: 'failed', error: error.toDocument() };
    }
    const record: SettledRecord = { ...intent, ...outcome, recorded_at: (this.options.now?.() ?? new Date()).toISOString() };
    // A device that failed under the work may come back; the task must then be able to run.
    if (outcome.error?.type !== unavailableType) await this.store.writeRecord(request.device, record);
    return resultOf(record, false);
  }

  /** Each device's inspection, or device-not-found for the first that does not exist. */
  private async inspectHeld(request: ExecutionRequest, deviceIds: string[]): Promise<DeviceInspection[]> {
    const inspections: DeviceInspection[] = [];
    for (const id of deviceIds) {
      const inspection = await this.store.inspect(id);
      if (!inspection) {
        this.usage.forget(id);
        throw deviceNotFound(id, id === request.device ? 'device' : 'params.target_device');
      }
      inspections.push(inspection);
    }
    return inspections;
  }

  /** Refuses an older epoch on any device the execution touches, then records a newer one on each. */
  private async fence(request: ExecutionRequest, reports: DeviceReport[]): Promise<void> {
    const { epoch } = request.fencing;
    const stale = reports.find((report) => checkEpoch(epoch, report.epoch) === 'stale');
    if (stale) {
      throw new ProblemError('stale-epoch', `epoch ${epoch} is older than epoch ${stale.epoch} recorded on device ${stale.id}`);
    }
    for (const report of reports) {
      if (checkEpoch(epoch, report.epoch) === 'newer') await this.store.writeEpoch(report.id, epoch);
    }
  }

  private async replay(request: ExecutionRequest, recorded: SettledRecord): Promise<ExecutionResult> {
    const { token } = request.fencing;
    if (checkTask(recorded.token, token) === 'stale') throw staleToken(request, recorded);
    // Remember the newest token so an attempt older than this one is refused from now on.
    if (token > recorded.token) await this.store.writeRecord(request.device, { ...recorded, token, attempt: request.attempt });
    return resultOf(recorded, true);
  }

  /**
   * Does the work. When `interrupted`, this task's own work was cut short by a crash, so
   * what it may have left (the volume it was creating or copying, the volume already gone
   * that it was deleting) is its own and is finished, not refused.
   */
  private async perform(deviceId: string, operation: Operation, reports: Map<string, DeviceReport>, interrupted: boolean): Promise<ExecutionOutput> {
    const device = reportOf(reports, deviceId);
    switch (operation.kind) {
      case 'volume.create': {
        const { name, size_bytes: size } = operation;
        const partial = interrupted ? await this.store.volumeSize(deviceId, name) : undefined;
        if (partial !== undefined) {
          assertCapacity(device, device.used_bytes - partial + size, size);
          await this.change(deviceId, () => this.store.resizeVolume(deviceId, name, size));
          this.usage.add(deviceId, size - partial, 0);
          return { volume: { device: deviceId, name, size_bytes: size } };
        }
        await this.assertAbsent(deviceId, name);
        assertCapacity(device, device.used_bytes + size, size);
        await this.change(deviceId, () => this.store.createVolume(deviceId, name, size));
        this.usage.add(deviceId, size, 1);
        return { volume: { device: deviceId, name, size_bytes: size } };
      }
      case 'volume.resize': {
        const { name, size_bytes: size } = operation;
        const current = await this.sizeOf(deviceId, name);
        assertCapacity(device, device.used_bytes - current + size, size);
        await this.change(deviceId, () => this.store.resizeVolume(deviceId, name, size));
        this.usage.add(deviceId, size - current, 0);
        return { volume: { device: deviceId, name, size_bytes: size } };
      }
      case 'volume.delete': {
        if (interrupted && (await this.store.volumeSize(deviceId, operation.name)) === undefined) {
          return { deleted: { device: deviceId, name: operation.name, size_bytes: 0 } };
        }
        const size = await this.sizeOf(deviceId, operation.name);
        await this.change(deviceId, () => this.store.deleteVolume(deviceId, operation.name));
        this.usage.add(deviceId, -size, -1);
        return { deleted: { device: deviceId, name: operation.name, size_bytes: size } };
      }
      case 'volume.copy': {
        const { name, target_device: targetId, target_name: targetName } = operation;
        const target = reportOf(reports, targetId);
        const size = await this.sizeOf(deviceId, name);
        const partial = interrupted ? await this.store.volumeSize(targetId, targetName) : undefined;
        if (partial !== undefined) {
          await this.change(targetId, () => this.store.deleteVolume(targetId, targetName));
          this.usage.add(targetId, -partial, -1);
        } else {
          await this.assertAbsent(targetId, targetName);
        }
        assertCapacity(target, target.used_bytes - (partial ?? 0) + size, size);
        const copied = await this.change(targetId, () => this.store.copyVolume({ device: deviceId, name }, { device: targetId, name: targetName }));
        this.usage.add(targetId, copied, 1);
        return {
          volume: { device: targetId, name: targetName, size_bytes: copied },
          source: { device: deviceId, name, size_bytes: size },
        };
      }
      case 'device.format': {
        // Everything goes, so the next execution lists the device again rather than count down.
        this.usage.forget(deviceId);
        const volumes: VolumeEntry[] = await this.store.volumes(deviceId);
        for (const volume of volumes) await this.store.deleteVolume(deviceId, volume.name);
        return { volumes_removed: volumes.length };
      }
      case 'device.probe':
        return { device: probeSummary(device) };
    }
  }

  /** Runs one change to a device's volumes; one that fails may be half done, so the device is listed again. */
  private async change<T>(deviceId: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      this.usage.forget(deviceId);
      throw error;
    }
  }

  private async sizeOf(deviceId: string, name: string): Promise<number> {
    const size = await this.store.volumeSize(deviceId, name);
    if (size === undefined) throw new ProblemError('volume-not-found', `volume ${name} does not exist on device ${deviceId}`);
    return size;
  }

  private async assertAbsent(deviceId: string, name: string): Promise<void> {
    if ((await this.store.volumeSize(deviceId, name)) !== undefined) {
      throw new ProblemError('volume-exists', `volume ${name} already exists on device ${deviceId}`);
    }
  }

  private injectedFailure(): ProblemDocument | undefined {
    const rate = this.options.faults?.failureRate ?? 0;
    if (rate <= 0 || (this.options.faults?.random ?? Math.random)() >= rate) return undefined;
    return problemDocument('device-unavailable', 'injected fault: the device did not complete the work');
  }

  /** What a device looks like now, with its volumes listed; undefined when there is no such device. */
  private async report(id: string): Promise<DeviceReport | undefined> {
    const inspection = await this.store.inspect(id);
    return inspection && this.reportOf(inspection, 'list');
  }

  /** The report of an inspected device; anything unreadable makes it unavailable with the reason. */
  private async reportOf(inspection: DeviceInspection, usageFrom: UsageSource): Promise<DeviceReport> {
    const { id, label } = inspection;
    let fault = inspection.fault ?? (label ? null : 'the device has no valid label');
    let epoch = 0;
    try {
      epoch = await this.store.readEpoch(id);
    } catch (error) {
      fault ??= `the fence record cannot be read (${describeError(error)})`;
    }
    let usage = noUsage;
    if (fault === null) {
      try {
        usage = await this.usageFor(inspection, epoch, usageFrom);
      } catch (error) {
        fault = `the volumes cannot be listed (${describeError(error)})`;
      }
    }
    if (fault !== null && usageFrom !== 'list') this.usage.forget(id);
    return {
      id,
      home_cluster: label?.home_cluster ?? unknownHomeCluster,
      capacity_bytes: label?.capacity_bytes ?? 0,
      ...usage,
      state: fault === null ? 'available' : 'unavailable',
      reason: fault,
      epoch,
    };
  }

  /** The device's usage, from where `from` says. */
  private async usageFor(inspection: DeviceInspection, epoch: number, from: UsageSource): Promise<VolumeUsage> {
    const { id } = inspection;
    if (from === 'list') return usageOf(await this.store.volumes(id));
    const basis = { inspection: inspectionKey(inspection), epoch, volumes: await this.store.volumesIdentity(id) };
    const kept = from === 'kept' ? this.usage.valid(id, basis) : undefined;
    if (kept) return kept;
    const listed = usageOf(await this.store.volumes(id));
    this.usage.keep(id, basis, listed);
    return listed;
  }
}

export function createExecutor(store: DeviceStore, options: ExecutorOptions = {}): Executor {
  return new Executor(store, options);
}

function assertCapacity(device: DeviceReport, usedAfter: number, asked: number): void {
  if (usedAfter <= device.capacity_bytes) return;
  const free = Math.max(0, device.capacity_bytes - device.used_bytes);
  throw new ProblemError(
    'insufficient-capacity',
    `device ${device.id} has ${free} of ${device.capacity_bytes} bytes free; ${asked} bytes were asked for`,
  );
}

function probeSummary(report: DeviceReport): NonNullable<ExecutionOutput['device']> {
  const { id, state, reason, capacity_bytes, used_bytes, volume_count } = report;
  return { id, state, reason, capacity_bytes, used_bytes, volume_count };
}

function reportOf(reports: Map<string, DeviceReport>, id: string): DeviceReport {
  const report = reports.get(id);
  if (!report) throw new Error(`device ${id} was not inspected before the work`);
  return report;
}

function deviceNotFound(id: string, field: string): ProblemError {
  return new ProblemError('device-not-found', `device ${id} (${field}) does not exist`);
}

const staleToken = (request: ExecutionRequest, recorded: ExecutionRecord): ProblemError =>
  new ProblemError(
    'stale-fencing-token',
    `task ${request.task_id} was recorded under fencing token ${recorded.token}; token ${request.fencing.token} is older`,
  );
