/**
 * A small client for the server's public API, as the benchmark needs it: submit a task,
 * watch it to its end, read the devices, change a device's state and fail a cluster back.
 */
import type { ServerApi } from '@duplex/contracts';
import { JsonClient } from '@duplex/shared';
import { bearer, testAdminToken } from '@duplex/testkit';

export type Task = ServerApi.components['schemas']['Task'];
export type TaskRequest = ServerApi.components['schemas']['TaskRequest'];
export type DeviceList = ServerApi.components['schemas']['DeviceList'];
export type Device = ServerApi.components['schemas']['Device'];
export type FailbackResult = ServerApi.components['schemas']['FailbackResult'];
export type DeviceStateChange = ServerApi.components['schemas']['DeviceStateChange'];

const terminal: ReadonlySet<Task['state']> = new Set(['succeeded', 'failed', 'cancelled']);

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class ServerClient {
  private readonly client: JsonClient;

  constructor(
    readonly id: string,
    readonly url: string,
  ) {
    // The benchmark sends a server at most two requests at a time (a poll beside a change); a short timeout keeps a
    // dead server from holding a poll loop.
    this.client = new JsonClient(url, { name: `server ${id}`, timeoutMs: 2_000, connections: 4, headers: bearer(testAdminToken) });
  }

  /** POST /v1/tasks; throws unless the server answers 202. */
  async submit(body: TaskRequest, idempotencyKey: string): Promise<Task> {
    const response = await this.client.call<Task>('POST', '/v1/tasks', { body, headers: { 'idempotency-key': idempotencyKey } });
    if (response.status !== 202) throw new Error(`server ${this.id} answered ${response.status} to POST /v1/tasks: ${JSON.stringify(response.body)}`);
    return response.body;
  }

  async task(id: string): Promise<Task> {
    const response = await this.client.call<Task>('GET', `/v1/tasks/${encodeURIComponent(id)}`);
    if (response.status !== 200) throw new Error(`server ${this.id} answered ${response.status} to GET /v1/tasks/${id}`);
    return response.body;
  }

  /**
   * Polls the task until it reaches a final state or the deadline (a Date.now() value)
   * passes. Returns the last state seen and when (Date.now()) the final state was first seen.
   */
  async waitForEnd(id: string, deadline: number, intervalMs = 20): Promise<{ task: Task | undefined; seenAt: number | undefined; lastError: string | undefined }> {
    let last: Task | undefined;
    let lastError: string | undefined;
    while (Date.now() < deadline) {
      try {
        last = await this.task(id);
        if (terminal.has(last.state)) return { task: last, seenAt: Date.now(), lastError };
      } catch (error) {
        lastError = (error as Error).message;
      }
      await sleep(intervalMs);
    }
    return { task: last, seenAt: undefined, lastError };
  }

  async devices(storageSystemId: string): Promise<Device[]> {
    const response = await this.client.call<DeviceList>('GET', `/v1/storage-systems/${encodeURIComponent(storageSystemId)}/devices?limit=500`);
    if (response.status !== 200) throw new Error(`server ${this.id} answered ${response.status} to GET devices`);
    return response.body.items;
  }

  /** GET one device as this server's agents last reported it. */
  async device(storageSystemId: string, deviceId: string): Promise<Device> {
    const response = await this.client.call<Device>('GET', `/v1/storage-systems/${encodeURIComponent(storageSystemId)}/devices/${encodeURIComponent(deviceId)}`);
    if (response.status !== 200) throw new Error(`server ${this.id} answered ${response.status} to GET device ${deviceId}`);
    return response.body;
  }

  /** POST …:set-state; throws unless the server answers 200 (it answers once its own view shows the change). */
  async setDeviceState(storageSystemId: string, deviceId: string, change: DeviceStateChange): Promise<Device> {
    const response = await this.client.call<Device>(
      'POST',
      `/v1/storage-systems/${encodeURIComponent(storageSystemId)}/devices/${encodeURIComponent(deviceId)}:set-state`,
      { body: change, timeoutMs: 10_000 },
    );
    if (response.status !== 200) throw new Error(`server ${this.id} answered ${response.status} to set-state ${deviceId}: ${JSON.stringify(response.body)}`);
    return response.body;
  }

  async failBack(storageSystemId: string, clusterId: string): Promise<{ status: number; body: FailbackResult | { type?: string; detail?: string } }> {
    const response = await this.client.call<FailbackResult | { type?: string; detail?: string }>(
      'POST',
      `/v1/storage-systems/${encodeURIComponent(storageSystemId)}/clusters/${encodeURIComponent(clusterId)}:failback`,
      { timeoutMs: 35_000 },
    );
    return { status: response.status, body: response.body };
  }

  async ready(): Promise<boolean> {
    try {
      return (await this.client.call('GET', '/readyz', { timeoutMs: 1_000 })).status === 200;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}

/** Polls check() until it returns a value other than undefined; throws with `what` when time runs out. */
export async function waitUntil<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: string | undefined;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = (error as Error).message;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}`);
}
