import type { DriverApi } from '@duplex/contracts';

type Schemas = DriverApi.components['schemas'];

export type ExecutionRequest = Schemas['ExecutionRequest'];
export type ExecutionResult = Schemas['ExecutionResult'];
export type ExecutionKind = ExecutionRequest['kind'];
export type ExecutionOutput = NonNullable<ExecutionResult['result']>;
export type DeviceReport = Schemas['DeviceReport'];
export type DeviceState = DeviceReport['state'];
export type Volume = Schemas['Volume'];
export type DeviceStatus = Schemas['DeviceStatus'];
export type DeviceLabelRequest = Schemas['DeviceLabel'];

/**
 * What the routes need from a backend. Every backend is the one executor over a device
 * store, so `file` and `memory` differ only in where the bytes and records live.
 */
export interface DriverBackend {
  /** Every device the backend can reach, sorted by id; throws `not-ready` when none can be listed. */
  discover(): Promise<DeviceReport[]>;
  /** What a probe sees of every device: presence, label and faults, without listing volumes. */
  scan(): Promise<DeviceStatus[]>;
  /** Creates a new device; throws `device-exists`. */
  provision(label: DeviceLabelRequest): Promise<DeviceReport>;
  /** One device; throws `device-not-found`. */
  probe(id: string): Promise<DeviceReport>;
  /** Runs (or replays) one execution; refusals throw a ProblemError, device failures are outcomes. */
  execute(request: ExecutionRequest): Promise<ExecutionResult>;
  /** Readiness checks by name, each `ok` or the reason it is not. */
  readiness(): Promise<Record<string, string>>;
}
