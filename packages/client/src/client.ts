import { randomUUID } from 'node:crypto';
import type { ServerApi } from '@duplex/contracts';
import createClient, { type Client } from 'openapi-fetch';
import { readEvents, type DuplexEvent, type EventStreamOptions, type StreamItem } from './events.ts';
import { createFailoverFetch, type FailoverOptions } from './failover-fetch.ts';
import { unwrap } from './problems.ts';

export type Task = ServerApi.components['schemas']['Task'];
export type TaskRequest = ServerApi.components['schemas']['TaskRequest'];
export type TaskState = ServerApi.components['schemas']['TaskState'];

export const terminalStates: readonly TaskState[] = ['succeeded', 'failed', 'cancelled'];
export const isTerminal = (state: TaskState): boolean => terminalStates.includes(state);

export interface DuplexClientOptions extends FailoverOptions {
  /** An API token (`dpx_…`), sent as a bearer token. */
  token?: string;
}

export interface WaitOptions {
  /** Told each state the task reaches while it is awaited, the current one first. */
  onState?: (task: Task) => void;
  /** Gives up (rejects) after this long (default: never). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * A client of the duplex servers. `api` is the whole server contract, typed from
 * openapi/server.yaml by openapi-typescript (`api.GET('/v1/tasks/{id}', …)`); every call
 * fails over between the servers (see createFailoverFetch). The helpers cover what most
 * callers do: submit a task once whatever fails, and wait for it.
 */
export interface DuplexClient {
  readonly api: Client<ServerApi.paths>;
  readonly servers: readonly string[];
  /** Submits a task; retries go to any server with the same Idempotency-Key, so it is created once. */
  submitTask(task: TaskRequest, options?: { idempotencyKey?: string }): Promise<Task>;
  getTask(id: string): Promise<Task>;
  /** Resolves with the task once it is succeeded, failed or cancelled, following its events. */
  waitForTask(id: string, options?: WaitOptions): Promise<Task>;
  /** Every event of the stream from now (or after `after`), resuming on another server when one goes away. */
  events(options?: EventStreamOptions): AsyncGenerator<DuplexEvent>;
}

export function createDuplexClient(options: DuplexClientOptions): DuplexClient {
  const fetcher = createFailoverFetch(options);
  const servers = options.servers.map((server) => server.replace(/\/$/, ''));
  const headers: Record<string, string> = options.token ? { authorization: `Bearer ${options.token}` } : {};
  // The base URL only shapes the request; the failover fetch sends it to whichever server answers.
  const api = createClient<ServerApi.paths>({ baseUrl: servers[0], fetch: fetcher, headers });

  async function getTask(id: string): Promise<Task> {
    return unwrap(await api.GET('/v1/tasks/{id}', { params: { path: { id } } }));
  }

  /** The stream, reopened (resuming after the last event) whenever it breaks; each opening is told. */
  async function* stream(streamOptions: EventStreamOptions = {}): AsyncGenerator<StreamItem> {
    let after = streamOptions.after;
    for (let failures = 0; !streamOptions.signal?.aborted; ) {
      try {
        for await (const item of readEvents(fetcher, servers[0]!, headers, { ...streamOptions, after })) {
          failures = 0;
          if (!item.opened) after = item.event.id;
          yield item;
        }
      } catch (error) {
        if (streamOptions.signal?.aborted) return;
        failures += 1;
        if (failures > servers.length * 3) throw error;
      }
      // The stream ended (a server shutting down ends it): resume where it stopped.
      await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, 100 * failures)));
    }
  }

  async function* events(streamOptions: EventStreamOptions = {}): AsyncGenerator<DuplexEvent> {
    for await (const item of stream(streamOptions)) if (!item.opened) yield item.event;
  }

  async function waitForTask(id: string, waitOptions: WaitOptions = {}): Promise<Task> {
    const abort = new AbortController();
    const stop = () => abort.abort(waitOptions.signal?.reason);
    waitOptions.signal?.addEventListener('abort', stop, { once: true });
    const timer = waitOptions.timeoutMs === undefined ? undefined : setTimeout(() => abort.abort(new Error(`task ${id} did not finish within ${waitOptions.timeoutMs} ms`)), waitOptions.timeoutMs);
    let seen: TaskState | undefined;
    const note = (task: Task): Task => {
      if (task.state !== seen) waitOptions.onState?.(task);
      seen = task.state;
      return task;
    };
    try {
      // The task is read each time the stream (re)opens, after it opened: no change can fall
      // between the read and the events, even when a break lost some.
      for await (const item of stream({ query: { task_id: id, type: ['task.state_changed'] }, signal: abort.signal })) {
        const state = item.opened ? undefined : (item.event.data as { state?: TaskState }).state;
        if (!item.opened && (state === undefined || state === seen)) continue;
        // The event names the state; the task itself (result, error) is read for it.
        const current = note(await getTask(id));
        if (isTerminal(current.state)) return current;
      }
      throw abort.signal.reason ?? new Error(`the event stream for task ${id} ended`);
    } catch (error) {
      if (abort.signal.aborted) throw abort.signal.reason;
      throw error;
    } finally {
      clearTimeout(timer);
      waitOptions.signal?.removeEventListener('abort', stop);
      abort.abort();
    }
  }

  return {
    api,
    servers,
    async submitTask(task, submitOptions = {}) {
      const key = submitOptions.idempotencyKey ?? randomUUID();
      return unwrap(await api.POST('/v1/tasks', { body: task, params: { header: { 'Idempotency-Key': key } } }));
    },
    getTask,
    waitForTask,
    events,
  };
}
