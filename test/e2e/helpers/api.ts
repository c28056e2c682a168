import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { ServerApi } from '@duplex/contracts';
import { bearer, testAdminToken, waitFor } from '@duplex/testkit';
import request, { type Response } from 'supertest';

type Schemas = ServerApi.components['schemas'];
export type Task = Schemas['Task'];
export type TaskRequest = Schemas['TaskRequest'];
export type TaskList = Schemas['TaskList'];
export type Problem = Schemas['Problem'];
export type Agent = Schemas['Agent'];
export type AgentList = Schemas['AgentList'];
export type StorageSystemList = Schemas['StorageSystemList'];
export type Device = Schemas['Device'];
export type DeviceList = Schemas['DeviceList'];

export const problemType = (code: string): string => `urn:duplex:problem:${code}`;

const terminal = new Set<Task['state']>(['succeeded', 'failed', 'cancelled']);

/** GET a JSON resource and insist on 200. */
export async function getJson<T>(baseUrl: string, path: string): Promise<T> {
  const response = await request(baseUrl).get(path).set('accept', 'application/json').set(bearer(testAdminToken));
  assert.equal(response.status, 200, `GET ${baseUrl}${path} answered ${response.status}: ${response.text}`);
  return response.body as T;
}

export interface SubmitOptions {
  idempotencyKey?: string;
  requestId?: string;
}

/** POST /v1/tasks; the caller judges the answer. */
export async function postTask(baseUrl: string, body: TaskRequest | Record<string, unknown>, options: SubmitOptions = {}): Promise<Response> {
  const call = request(baseUrl)
    .post('/v1/tasks')
    .set('Idempotency-Key', options.idempotencyKey ?? `e2e-${randomUUID()}`)
    .set('content-type', 'application/json')
    .set(bearer(testAdminToken));
  if (options.requestId) call.set('x-request-id', options.requestId);
  return call.send(JSON.stringify(body));
}

/** Submits a task that must be accepted (202 with Location); answers the task resource. */
export async function submitTask(baseUrl: string, body: TaskRequest, options: SubmitOptions = {}): Promise<Task> {
  const response = await postTask(baseUrl, body, options);
  assert.equal(response.status, 202, `${body.kind} on ${body.device} via ${baseUrl} answered ${response.status}: ${response.text}`);
  const task = response.body as Task;
  assert.equal(response.headers.location, `/v1/tasks/${task.id}`);
  return task;
}

/** Polls GET /v1/tasks/{id} until the task is succeeded, failed or cancelled. */
export async function waitForTask(baseUrl: string, id: string, timeoutMs = 15_000): Promise<Task> {
  let last: Task | undefined;
  try {
    return await waitFor(
      `task ${id} to finish`,
      async () => {
        last = await getJson<Task>(baseUrl, `/v1/tasks/${id}`);
        return terminal.has(last.state) ? last : undefined;
      },
      timeoutMs,
      25,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}; last seen: ${JSON.stringify(last)}`);
  }
}

/** Submits through one server and waits for the task to end there. */
export async function runTask(baseUrl: string, body: TaskRequest, options: SubmitOptions = {}): Promise<Task> {
  const accepted = await submitTask(baseUrl, body, options);
  return waitForTask(baseUrl, accepted.id);
}

export function assertSucceeded(task: Task): void {
  assert.equal(task.state, 'succeeded', `task ${task.id} (${task.kind} on ${task.device}) ended ${task.state}: ${JSON.stringify(task.error)}`);
  assert.equal(task.error, null);
  assert.ok(task.result, `task ${task.id} succeeded without a result`);
}

/** The answer is an RFC 9457 problem of the given kind and status. */
export function assertProblem(response: Response, status: number, code: string): Problem {
  assert.equal(response.status, status, `expected ${status} ${code}, got ${response.status}: ${response.text}`);
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
  const problem = response.body as Problem;
  assert.equal(problem.type, problemType(code));
  assert.equal(problem.status, status);
  assert.ok(problem.title, 'a problem has a title');
  return problem;
}

/** Every task in GET /v1/tasks, following next_cursor; the pages are fetched from the servers in turn. */
export async function listAllTasks(baseUrls: string[], limit: number): Promise<{ ids: string[]; pages: number; items: Task[] }> {
  const items: Task[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const baseUrl = baseUrls[pages % baseUrls.length]!;
    const query: string = `/v1/tasks?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page: TaskList = await getJson<TaskList>(baseUrl, query);
    assert.ok(page.items.length <= limit, `a page holds at most ${limit} items, got ${page.items.length}`);
    items.push(...page.items);
    cursor = page.next_cursor;
    pages += 1;
    assert.ok(pages < 10_000, 'pagination does not end');
  } while (cursor);
  return { ids: items.map((task) => task.id), pages, items };
}
