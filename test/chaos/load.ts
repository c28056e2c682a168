import { randomUUID } from 'node:crypto';
import type { ServerApi } from '@duplex/contracts';
import { bearer, testAdminToken } from '@duplex/testkit';
import { request } from 'undici';

type Task = ServerApi.components['schemas']['Task'];
type TaskRequest = ServerApi.components['schemas']['TaskRequest'];

export interface LedgerEntry {
  id: string;
  request: TaskRequest;
}

/**
 * A client that sends each task to one server and, when that server is unreachable or
 * answers 5xx, to the next one with the same Idempotency-Key, as a user's client would.
 */
export class FailoverClient {
  retries = 0;
  private next = 0;

  constructor(private readonly servers: string[]) {}

  async submit(body: TaskRequest, deadlineMs = 30_000): Promise<Task> {
    const key = randomUUID();
    const deadline = Date.now() + deadlineMs;
    for (let attempt = 0; Date.now() < deadline; attempt += 1) {
      const server = this.servers[(this.next + attempt) % this.servers.length]!;
      try {
        const response = await request(`${server}/v1/tasks`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key, ...bearer(testAdminToken) },
          body: JSON.stringify(body),
          headersTimeout: 5_000,
          bodyTimeout: 5_000,
        });
        const text = await response.body.text();
        if (response.statusCode === 202) {
          this.next += 1;
          return JSON.parse(text) as Task;
        }
        if (response.statusCode < 500) throw new Error(`refused with ${response.statusCode}: ${text}`);
      } catch (error) {
        if ((error as Error).message.startsWith('refused')) throw error;
      }
      this.retries += 1;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`no server accepted the task within ${deadlineMs} ms`);
  }

  /** The task as any server sees it (every server answers for every task). */
  async get(id: string): Promise<Task | undefined> {
    for (const server of this.servers) {
      try {
        const response = await request(`${server}/v1/tasks/${id}`, { headers: bearer(testAdminToken), headersTimeout: 5_000, bodyTimeout: 5_000 });
        const text = await response.body.text();
        if (response.statusCode === 200) return JSON.parse(text) as Task;
      } catch {
        // the next server
      }
    }
    return undefined;
  }
}

/**
 * A bounded stream of creates and deletes over every device, at a fixed rate, for a fixed
 * time. Every accepted task goes into the ledger; deletes name only volumes whose create
 * succeeded, so that the ledger says exactly which files must exist at the end.
 */
export async function runLoad(
  client: FailoverClient,
  options: { devices: string[]; ratePerSecond: number; durationMs: number; signal: AbortSignal },
): Promise<LedgerEntry[]> {
  const ledger: LedgerEntry[] = [];
  const created: { device: string; name: string; id: string }[] = [];
  const deleting = new Set<string>();
  const end = Date.now() + options.durationMs;
  let sequence = 0;
  const inFlight = new Set<Promise<void>>();
  while (Date.now() < end && !options.signal.aborted) {
    sequence += 1;
    const deletable = created.filter((volume) => !deleting.has(volume.name));
    let body: TaskRequest;
    if (sequence % 4 === 0 && deletable.length > 0) {
      const victim = deletable[sequence % deletable.length]!;
      const createTask = await client.get(victim.id);
      if (createTask?.state !== 'succeeded') continue;
      deleting.add(victim.name);
      body = { kind: 'volume.delete', storage_system_id: 'ss1', device: victim.device, params: { name: victim.name } };
    } else {
      const device = options.devices[sequence % options.devices.length]!;
      const name = `chaos-${sequence}`;
      body = { kind: 'volume.create', storage_system_id: 'ss1', device, params: { name, size_bytes: 4096 * (1 + (sequence % 64)) } };
    }
    const submitted = client.submit(body).then(
      (task) => {
        ledger.push({ id: task.id, request: body });
        if (body.kind === 'volume.create') created.push({ device: body.device, name: body.params.name, id: task.id });
      },
      () => undefined,
    );
    inFlight.add(submitted);
    void submitted.finally(() => inFlight.delete(submitted));
    await new Promise((resolve) => setTimeout(resolve, 1000 / options.ratePerSecond));
  }
  await Promise.all(inFlight);
  return ledger;
}
