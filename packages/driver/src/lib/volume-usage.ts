import type { DeviceInspection, VolumeEntry } from './device-store.ts';

/** What a device's volumes take: the sum of their logical sizes, and how many there are. */
export interface VolumeUsage {
  used_bytes: number;
  volume_count: number;
}

/** What a device looked like when its volumes were listed; a listing holds only while all of it is the same. */
export interface UsageBasis {
  /** The label and fault the device was inspected with (`inspectionKey`). */
  inspection: string;
  /**
   * The fencing epoch on the device: a cluster taking the device over records a newer one
   * before it works on it. The driver's own newer epoch counts too, so the listing after it
   * also sees what the owner it shuts out finished meanwhile.
   */
  epoch: number;
  /** The store's `volumesIdentity`: a replaced device keeps its volumes somewhere else. */
  volumes: string;
}

/** How long a listing is counted on by default: the cluster-manager's USAGE_REFRESH_INTERVAL_MS default. */
export const defaultUsageMaxAgeMs = 30_000;

export const noUsage: VolumeUsage = { used_bytes: 0, volume_count: 0 };

export function usageOf(volumes: readonly VolumeEntry[]): VolumeUsage {
  return { used_bytes: volumes.reduce((sum, volume) => sum + volume.size_bytes, 0), volume_count: volumes.length };
}

export function inspectionKey(inspection: DeviceInspection): string {
  return JSON.stringify([inspection.label ?? null, inspection.fault]);
}

interface Kept extends VolumeUsage {
  basis: UsageBasis;
  listedAt: number;
}

/**
 * Each device's usage, kept between executions so that an execution does not list every volume
 * (a readdir and a stat per volume on the file store) to check capacity. It is exact for what
 * the driver does, and an outside change is counted within `maxAgeMs`:
 *
 * - A device's usage is set only from a full listing, and changed only by `add`, right after a
 *   change to the volumes succeeded; both happen while the execution holds the device, and
 *   executions on a device run one at a time. So what is kept is always that listing plus the
 *   driver's own changes since, exactly what a new listing would find had nobody else touched
 *   the device.
 * - A change that fails may be half done: the executor forgets the device then (and on a format,
 *   which removes everything), and the next execution lists again.
 * - The driver cannot count what others do (volumes added or removed by hand, another driver).
 *   So a listing holds only while the device looks the same (`UsageBasis`, checked at every
 *   execution; the device probe also forgets a device whose label or fault changed), and for
 *   at most `maxAgeMs`.
 * - Forgetting is always safe, so it needs no device lock; keeping and adding do.
 */
export class UsageCache {
  private readonly kept = new Map<string, Kept>();

  constructor(
    private readonly maxAgeMs: number,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /** The kept usage when it still holds for a device that looks like `basis`, else undefined. */
  valid(id: string, basis: UsageBasis): VolumeUsage | undefined {
    const kept = this.kept.get(id);
    if (!kept || !sameBasis(kept.basis, basis)) return undefined;
    const age = this.clock() - kept.listedAt;
    if (age < 0 || age >= this.maxAgeMs) return undefined;
    return { used_bytes: kept.used_bytes, volume_count: kept.volume_count };
  }

  /** Keeps what a listing found, taken while the device was held. */
  keep(id: string, basis: UsageBasis, usage: VolumeUsage): void {
    this.kept.set(id, { ...usage, basis, listedAt: this.clock() });
  }

  /** Counts a change the driver just made to the device's volumes. */
  add(id: string, bytes: number, volumes: number): void {
    const kept = this.kept.get(id);
    if (!kept) return;
    kept.used_bytes += bytes;
    kept.volume_count += volumes;
  }

  forget(id: string): void {
    this.kept.delete(id);
  }

  /** Forgets every device not in `seen` (id to `inspectionKey`) as it was when listed. */
  forgetChanged(seen: ReadonlyMap<string, string>): void {
    for (const [id, kept] of this.kept) {
      if (seen.get(id) !== kept.basis.inspection) this.kept.delete(id);
    }
  }
}

function sameBasis(a: UsageBasis, b: UsageBasis): boolean {
  return a.inspection === b.inspection && a.epoch === b.epoch && a.volumes === b.volumes;
}
