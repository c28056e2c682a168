import { randomUUID } from 'node:crypto';
import { createDuplexClient, ProblemResponseError, ServersUnavailableError, type DuplexClient, type Task, type TaskRequest } from '@duplex/client';
import { testAdminToken } from '@duplex/testkit';

export interface LedgerEntry {
  id: string;
  request: TaskRequest;
}

/**
 * The chaos tests' client: duplex's own (@duplex/client), which sends each call to one server
 * and, when that one is unreachable or answers 5xx, to the next with the same Idempotency-Key.
 * While every server is down (a kill and its restart), a submission keeps its key and is sent
 * again until the deadline, as a patient user's script would.
 */
export class FailoverClient {
  retries = 0;
  private readonly client: DuplexClient;

  constructor(servers: string[]) {
    this.client = createDuplexClient({ servers, token: testAdminToken, timeoutMs: 5_000, onFailover: () => (this.retries += 1) });
  }

  async submit(body: TaskRequest, deadlineMs = 30_000): Promise<Task> {
    const idempotencyKey = randomUUID();
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      try {
        return await this.client.submitTask(body, { idempotencyKey });
      } catch (error) {
        const unavailable = error instanceof ServersUnavailableError || (error instanceof ProblemResponseError && error.status >= 500);
        if (!unavailable) throw new Error(`refused: ${(error as Error).message}`);
        if (Date.now() >= deadline) throw new Error(`no server accepted the task within ${deadlineMs} ms: ${(error as Error).message}`);
        this.retries += 1;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /** The task as any server sees it (every server answers for every task). */
  async get(id: string): Promise<Task | undefined> {
    try {
      return await this.client.getTask(id);
    } catch {
      return undefined;
    }
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
