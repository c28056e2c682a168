import { randomUUID } from 'node:crypto';
import type { DeviceStatus, DriverBackend } from './types.ts';

export interface DeviceWatchSnapshot {
  instance_id: string;
  generation: number;
  probed_at: string;
  devices: DeviceStatus[];
}

export interface DeviceChangeListener {
  (snapshot: DeviceWatchSnapshot, previous: DeviceStatus[]): void;
}

/**
 * Probes the devices on an interval and numbers each probe that finds a change with a new
 * generation. Callers wait for a generation newer than theirs (a long poll), so a change
 * reaches the cluster-manager as soon as a probe finds it, without the driver knowing who
 * listens. Generations restart with the process; the instance id tells runs apart.
 */
export class DeviceWatch {
  readonly instanceId = randomUUID();
  private snapshot: DeviceWatchSnapshot;
  private readonly waiters = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private probing: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly backend: Pick<DriverBackend, 'scan'>,
    private readonly intervalMs: number,
    private readonly onChange: DeviceChangeListener = () => {},
    private readonly onError: (error: unknown) => void = () => {},
  ) {
    this.snapshot = { instance_id: this.instanceId, generation: 0, probed_at: new Date().toISOString(), devices: [] };
  }

  /** Probes once now, then on the interval. */
  async start(): Promise<void> {
    await this.probe();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.probe().finally(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }

  /** One probe at a time; a call during a probe waits for it instead of starting another. */
  probe(): Promise<void> {
    this.probing ??= this.probeOnce().finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  private async probeOnce(): Promise<void> {
    let devices: DeviceStatus[];
    try {
      devices = await this.backend.scan();
    } catch (error) {
      // The device root itself cannot be listed: readiness reports it; keep the last picture.
      this.onError(error);
      return;
    }
    const probedAt = new Date().toISOString();
    const previous = this.snapshot.devices;
    if (sameStatuses(previous, devices) && this.snapshot.generation > 0) {
      this.snapshot = { ...this.snapshot, probed_at: probedAt };
      return;
    }
    this.snapshot = { instance_id: this.instanceId, generation: this.snapshot.generation + 1, probed_at: probedAt, devices };
    if (this.snapshot.generation > 1) this.onChange(this.snapshot, previous);
    for (const wake of this.waiters) wake();
  }

  current(): DeviceWatchSnapshot {
    return this.snapshot;
  }

  /**
   * The snapshot once it is newer than `after` (of the same instance), or the current one when
   * `waitMs` passes or `signal` aborts first.
   */
  async changesAfter(after: number, instanceId: string | undefined, waitMs: number, signal?: AbortSignal): Promise<DeviceWatchSnapshot> {
    const isNews = () => instanceId !== this.instanceId || this.snapshot.generation > after;
    if (isNews() || waitMs === 0 || this.stopped) return this.snapshot;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timeout);
        this.waiters.delete(wake);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const wake = () => {
        if (isNews() || this.stopped) done();
      };
      const timeout = setTimeout(done, waitMs);
      this.waiters.add(wake);
      signal?.addEventListener('abort', done, { once: true });
    });
    return this.snapshot;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const wake of [...this.waiters]) wake();
  }
}

const statusFields = ['id', 'home_cluster', 'capacity_bytes', 'state', 'reason'] as const;

export function sameStatuses(a: DeviceStatus[], b: DeviceStatus[]): boolean {
  return a.length === b.length && a.every((status, index) => statusFields.every((field) => status[field] === b[index]?.[field]));
}

/** One line per changed device, for the log: `d3 unavailable (the device is marked FAILED)`. */
export function describeChanges(previous: DeviceStatus[], next: DeviceStatus[]): string[] {
  const before = new Map(previous.map((status) => [status.id, status]));
  const after = new Map(next.map((status) => [status.id, status]));
  const lines: string[] = [];
  for (const status of next) {
    const old = before.get(status.id);
    if (!old) lines.push(`${status.id} found`);
    else if (old.state !== status.state || old.reason !== status.reason) lines.push(`${status.id} ${status.state}${status.reason ? ` (${status.reason})` : ''}`);
    else if (old.capacity_bytes !== status.capacity_bytes) lines.push(`${status.id} capacity ${old.capacity_bytes} -> ${status.capacity_bytes}`);
    else if (old.home_cluster !== status.home_cluster) lines.push(`${status.id} home ${old.home_cluster} -> ${status.home_cluster}`);
  }
  for (const status of previous) if (!after.has(status.id)) lines.push(`${status.id} gone`);
  return lines;
}
