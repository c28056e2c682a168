import { ProblemError } from '@duplex/shared';
import { parseLabel, type DeviceInspection, type DeviceLabel, type DeviceStore, type VolumeEntry } from './device-store.ts';
import type { ExecutionRecord } from './execution-record.ts';

interface MemoryDevice {
  /** Tells this device from an earlier one under the same id. */
  serial: number;
  label: DeviceLabel;
  fault: string | null;
  epoch: number;
  /** Volume name to size; memory volumes have a size but no bytes. */
  volumes: Map<string, number>;
  records: Map<string, ExecutionRecord>;
}

/** Devices held in memory: fast, and lost with the process (for tests and benchmarks). */
export class MemoryDeviceStore implements DeviceStore {
  private readonly devices = new Map<string, MemoryDevice>();
  private serials = 0;

  constructor(labels: readonly DeviceLabel[]) {
    for (const label of labels) {
      const checked = parseLabel(label);
      if (typeof checked === 'string') throw new TypeError(`memory device ${label.id}: ${checked}`);
      if (this.devices.has(checked.id)) throw new TypeError(`memory device ${checked.id} is listed twice`);
      this.devices.set(checked.id, this.newDevice(checked));
    }
  }

  /** Marks a device unavailable with a reason, or available again with null (fault injection). */
  setFault(id: string, reason: string | null): void {
    this.device(id).fault = reason;
  }

  async deviceIds(): Promise<string[]> {
    return [...this.devices.keys()];
  }

  async inspect(id: string): Promise<DeviceInspection | undefined> {
    const device = this.devices.get(id);
    return device && { id, label: { ...device.label }, fault: device.fault };
  }

  async readEpoch(id: string): Promise<number> {
    return this.device(id).epoch;
  }

  async writeEpoch(id: string, epoch: number): Promise<void> {
    this.device(id).epoch = epoch;
  }

  async readRecord(id: string, taskId: string): Promise<ExecutionRecord | undefined> {
    const record = this.device(id).records.get(taskId);
    return record && structuredClone(record);
  }

  async writeRecord(id: string, record: ExecutionRecord): Promise<void> {
    this.device(id).records.set(record.task_id, structuredClone(record));
  }

  async volumes(id: string): Promise<VolumeEntry[]> {
    return [...this.device(id).volumes]
      .map(([name, size]) => ({ name, size_bytes: size }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async volumesIdentity(id: string): Promise<string> {
    return String(this.device(id).serial);
  }

  async volumeSize(id: string, name: string): Promise<number | undefined> {
    return this.device(id).volumes.get(name);
  }

  async createVolume(id: string, name: string, sizeBytes: number): Promise<void> {
    const { volumes } = this.device(id);
    if (volumes.has(name)) throw new ProblemError('volume-exists', `volume ${name} already exists on device ${id}`);
    volumes.set(name, sizeBytes);
  }

  async resizeVolume(id: string, name: string, sizeBytes: number): Promise<void> {
    const { volumes } = this.device(id);
    if (!volumes.has(name)) throw volumeNotFound(id, name);
    volumes.set(name, sizeBytes);
  }

  async deleteVolume(id: string, name: string): Promise<void> {
    if (!this.device(id).volumes.delete(name)) throw volumeNotFound(id, name);
  }

  async copyVolume(from: { device: string; name: string }, to: { device: string; name: string }): Promise<number> {
    const size = this.device(from.device).volumes.get(from.name);
    if (size === undefined) throw volumeNotFound(from.device, from.name);
    await this.createVolume(to.device, to.name, size);
    return size;
  }

  async provision(label: DeviceLabel): Promise<void> {
    if (this.devices.has(label.id)) throw new ProblemError('device-exists', `device ${label.id} already exists`);
    this.devices.set(label.id, this.newDevice({ ...label }));
  }

  /** Changes a device's capacity as if it were grown or shrunk underneath (fault injection). */
  setCapacity(id: string, capacityBytes: number): void {
    this.device(id).label.capacity_bytes = capacityBytes;
  }

  /** Removes a device as if it were detached (fault injection). */
  detach(id: string): void {
    this.devices.delete(id);
  }

  async readiness(): Promise<string> {
    return 'ok';
  }

  private newDevice(label: DeviceLabel): MemoryDevice {
    this.serials += 1;
    return { serial: this.serials, label, fault: null, epoch: 0, volumes: new Map(), records: new Map() };
  }

  private device(id: string): MemoryDevice {
    const device = this.devices.get(id);
    if (!device) throw new ProblemError('device-not-found', `device ${id} does not exist`);
    return device;
  }
}

export function createMemoryStore(labels: readonly DeviceLabel[]): MemoryDeviceStore {
  return new MemoryDeviceStore(labels);
}

/** Reads `id:home_cluster:capacity_bytes,...` (DRIVER_MEMORY_DEVICES); throws naming the bad entry. */
export function parseMemoryDevices(spec: string): DeviceLabel[] {
  const labels: DeviceLabel[] = [];
  for (const entry of spec.split(',').map((part) => part.trim()).filter((part) => part !== '')) {
    const [id, homeCluster, capacity, ...rest] = entry.split(':');
    const capacityBytes = capacity !== undefined && /^[0-9]+$/.test(capacity) ? Number(capacity) : undefined;
    const label = parseLabel({ id, home_cluster: homeCluster, capacity_bytes: capacityBytes });
    if (rest.length > 0 || typeof label === 'string') {
      throw new TypeError(`memory device "${entry}" is not id:home_cluster:capacity_bytes${typeof label === 'string' ? ` (${label})` : ''}`);
    }
    if (labels.some((known) => known.id === label.id)) throw new TypeError(`memory device ${label.id} is listed twice`);
    labels.push(label);
  }
  return labels;
}

function volumeNotFound(id: string, name: string): ProblemError {
  return new ProblemError('volume-not-found', `volume ${name} does not exist on device ${id}`);
}
