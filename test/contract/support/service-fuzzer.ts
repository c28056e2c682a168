import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { loadResolvedContract, type ContractName } from '@duplex/contracts';
import { defaultLogger } from '@duplex/shared';
import { carriesCredentialOf, contractOperations, requestsFor, type ContractOperation, type FuzzRequest, type KnownValues } from '@duplex/testkit';
import fc from 'fast-check';
import type { App, InjectRequest } from './services.ts';

/**
 * Random and mutated requests to every operation of one service's contract, with the right
 * credential and without it, checked for what must hold whatever the request: no 5xx but a
 * documented 503, a problem document naming the request for every refusal, 401 for a request
 * without its caller's credential, no change of state from a refused request, and a service
 * that still answers. The requests come from @duplex/testkit's generator (as the server's
 * fuzzer's do); a fixed seed keeps runs repeatable, FUZZ_SEED and FUZZ_RUNS change it and the
 * number of requests per operation.
 */
export const fuzzSeed = Number(process.env.FUZZ_SEED ?? 20261204);
export const fuzzRuns = Number(process.env.FUZZ_RUNS ?? 30);

/** A request must be answered within this; a longer wait is a hang. */
const answerDeadlineMs = 10_000;

/** The id a service keeps when a caller sends it (shared/service-app.ts), so one id follows a request. */
const keptRequestId = /^[A-Za-z0-9._:-]{1,128}$/;

export interface Answer {
  statusCode: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

/**
 * A bug the fuzzer found and the product still has. The fuzz failures it explains are counted
 * instead of failed, and the requests that would set it off for the rest of the run (a service
 * left wedged) are not sent; its smallest request runs as a test of its own, which fails once
 * the bug is fixed, so that the entry goes with the fix.
 */
export interface KnownBug {
  title: string;
  operationId: string;
  /** Whether a fuzz failure is this bug. */
  explains?(request: FuzzRequest, answer: Answer | undefined, violations: string[]): boolean;
  /** Whether this request would set the bug off and spoil the rest of the run: it is not sent. */
  setsOff?(request: FuzzRequest): boolean;
  /** The smallest request that shows it. */
  reproduce(): InjectRequest;
  /** Whether the service, having answered `reproduce`, still shows the bug. */
  stillThere(answer: Answer): Promise<boolean> | boolean;
}

export interface FuzzTarget {
  contract: ContractName;
  /** The service under test, ready, with `observed.watch` installed before it was. */
  app(): App;
  known(): KnownValues;
  /** The state that a refused request must leave as it was. */
  snapshot(): Promise<unknown>;
  /** Waits for the background work of an accepted request (an agent's task) to end, so that it is not taken for the next request's doing. */
  settle?(): Promise<void>;
  /** Long polls by operationId: a request still waiting after this many ms is left, as a caller that gave up would. */
  longPolls?: Record<string, number>;
  knownBugs?: KnownBug[];
  observed: Observed;
}

/**
 * What a fuzzed app did beside answering: which operation answered each request (by request
 * id), as the router matched it (a mutated method or path reaches another operation or none),
 * and its error log lines, shown with a 5xx.
 */
export class Observed {
  readonly served = new Map<string, string | undefined>();
  readonly errors: string[] = [];

  /** Logger options for the app: error lines only, kept here. */
  logger(service: string): object {
    const lines = this.errors;
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        if (lines.length > 200) lines.shift();
        done();
      },
    });
    return { ...(defaultLogger(service) as object), level: process.env.FUZZ_LOG_LEVEL ?? 'error', stream };
  }

  /** Call before the app is ready. */
  watch(app: App): void {
    app.addHook('onResponse', async (request) => {
      const config = request.routeOptions.config as { operationId?: string };
      this.served.set(String(request.id), config.operationId);
    });
  }
}

function describeRequest(request: FuzzRequest): string {
  const payload = request.payload === undefined ? '' : ` body(${request.payload.length}): ${JSON.stringify(request.payload.toString().slice(0, 300))}`;
  const authorization = request.headers.authorization === undefined ? 'no token' : `authorization ${JSON.stringify(request.headers.authorization.slice(0, 90))}`;
  return `${request.method} ${request.url.slice(0, 300)} (${authorization}) [${request.mutations.join('; ') || 'as the contract says'}]${payload}`;
}

/** What differs between two snapshots, by key, for the failure message. */
function difference(before: unknown, after: unknown): string {
  if (before === null || after === null || typeof before !== 'object' || typeof after !== 'object') return `${JSON.stringify(before)} -> ${JSON.stringify(after)}`;
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  const changed = [...keys].filter((key) => !isDeepStrictEqual((before as Record<string, unknown>)[key], (after as Record<string, unknown>)[key]));
  return changed.map((key) => `${key}: ${JSON.stringify((before as Record<string, unknown>)[key])?.slice(0, 200)} -> ${JSON.stringify((after as Record<string, unknown>)[key])?.slice(0, 200)}`).join('; ');
}

function problemViolations(answer: Answer, request: FuzzRequest, head: boolean): string[] {
  const violations: string[] = [];
  if (!/^application\/problem\+json/.test(String(answer.headers['content-type']))) violations.push(`${answer.statusCode} is not a problem document (content-type ${String(answer.headers['content-type'])})`);
  const sentId = request.headers['x-request-id'];
  if (sentId !== undefined && keptRequestId.test(sentId) && answer.headers['x-request-id'] !== sentId) violations.push(`x-request-id ${String(answer.headers['x-request-id'])} is not the request's ${sentId}`);
  if (head || violations.length > 0) return violations;
  let problem: { type?: unknown; title?: unknown; status?: unknown; request_id?: unknown };
  try {
    problem = JSON.parse(answer.body) as typeof problem;
  } catch {
    return [`the problem document is not JSON: ${answer.body.slice(0, 200)}`];
  }
  if (typeof problem.type !== 'string' || !/^urn:duplex:problem:[a-z-]+$/.test(problem.type)) violations.push(`problem type ${JSON.stringify(problem.type)}`);
  if (typeof problem.title !== 'string' || problem.title.length === 0) violations.push('problem without a title');
  if (problem.status !== answer.statusCode) violations.push(`problem status ${JSON.stringify(problem.status)} in a ${answer.statusCode} answer`);
  if (problem.request_id === undefined || problem.request_id !== answer.headers['x-request-id']) violations.push(`problem request_id ${JSON.stringify(problem.request_id)} is not the x-request-id ${String(answer.headers['x-request-id'])}`);
  return violations;
}

async function withDeadline<T>(work: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: ${label}`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Registers one test per operation of the target's contract, and one per known bug. Call inside a describe. */
export function fuzzContract(target: FuzzTarget): void {
  const operations = contractOperations(loadResolvedContract(target.contract));
  const byId = new Map(operations.map((operation) => [operation.operationId, operation]));
  const documents503 = new Set(operations.filter((operation) => documentsStatus(target.contract, operation, '503')).map((operation) => operation.operationId));
  const bugHits = new Map<string, number>();
  let counter = 0;

  async function send(operation: ContractOperation, request: FuzzRequest): Promise<Answer | 'left waiting'> {
    const label = describeRequest(request);
    const leaveAfter = target.longPolls?.[operation.operationId];
    const abort = new AbortController();
    // `authorization: undefined` is how the generator says "no token": such a header is left out.
    const headers = Object.fromEntries(Object.entries(request.headers).filter(([, value]) => value !== undefined));
    const options = { method: request.method, url: request.url, headers, ...(request.payload === undefined ? {} : { payload: request.payload }), ...(leaveAfter === undefined ? {} : { signal: abort.signal }) };
    const answering = target.app().inject(options as never) as unknown as Promise<Answer>;
    if (leaveAfter === undefined) return withDeadline(answering, answerDeadlineMs, label);
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<'left waiting'>((resolve) => {
      timer = setTimeout(() => resolve('left waiting'), leaveAfter);
    });
    const first = await Promise.race([answering, waited]);
    clearTimeout(timer);
    if (first !== 'left waiting') return first;
    // The caller goes away: the long poll must end (its handler stops waiting), not hang on.
    abort.abort();
    await withDeadline(answering.catch(() => undefined), answerDeadlineMs, `${label}, after its caller went away`);
    return 'left waiting';
  }

  async function exercise(operation: ContractOperation, generated: FuzzRequest, statuses: Map<string, number>): Promise<void> {
    const app = target.app();
    const known = target.known();
    counter += 1;
    // Every request names itself, so its refusal can be checked to name it back.
    const request = 'x-request-id' in generated.headers ? generated : { ...generated, headers: { ...generated.headers, 'x-request-id': `fuzz-${target.contract}-${counter}` } };
    const label = describeRequest(request);
    const { served, errors } = target.observed;
    const avoided = target.knownBugs?.find((bug) => bug.operationId === operation.operationId && bug.setsOff?.(request));
    if (avoided) {
      bugHits.set(avoided.title, (bugHits.get(avoided.title) ?? 0) + 1);
      statuses.set('not sent (known bug)', (statuses.get('not sent (known bug)') ?? 0) + 1);
      return;
    }
    await target.settle?.().catch((error: unknown) => {
      throw new Error(`${(error as Error).message} before ${label}\nservice log:\n${errors.slice(-20).join('').slice(-3_000)}`);
    });
    const before = await target.snapshot();
    served.clear();
    const outcome = await send(operation, request);
    const violations: string[] = [];
    let answer: Answer | undefined;
    if (outcome === 'left waiting') {
      statuses.set('waiting', (statuses.get('waiting') ?? 0) + 1);
    } else {
      answer = outcome;
      statuses.set(String(answer.statusCode), (statuses.get(String(answer.statusCode)) ?? 0) + 1);
      const requestId = String(answer.headers['x-request-id']);
      const servedBy = served.get(requestId);
      served.delete(requestId);
      const servedOperation = servedBy === undefined ? undefined : byId.get(servedBy);
      const status = answer.statusCode;
      if (status >= 500 && !(status === 503 && servedBy !== undefined && documents503.has(servedBy))) {
        const log = errors.filter((line) => line.includes(requestId)).join('').slice(0, 2_000);
        violations.push(`answered ${status}${servedBy ? ` from ${servedBy}, which does not document it` : ''}: ${answer.body.slice(0, 300)}${log ? `\nservice log:\n${log}` : ''}`);
      }
      if (status >= 400) violations.push(...problemViolations(answer, request, request.method === 'HEAD'));
      if (servedOperation && servedOperation.callers.length > 0) {
        const authorized = carriesCredentialOf(request, servedOperation.callers, known);
        if (!authorized && status !== 401) violations.push(`${servedBy} answered ${status} to a request without a credential of ${servedOperation.callers.join(' or ')}`);
        if (!authorized && status === 401 && answer.headers['www-authenticate'] !== 'Bearer realm="duplex"') violations.push(`401 with www-authenticate ${String(answer.headers['www-authenticate'])}`);
        if (authorized && status === 401) violations.push(`${servedBy} refused the credential of its caller`);
      }
      if (status >= 400) {
        const after = await target.snapshot();
        if (!isDeepStrictEqual(after, before)) violations.push(`refused with ${status} but changed state: ${difference(before, after)}`);
      }
    }
    // Bodies carry `__proto__` and `constructor.prototype` keys: none may reach the prototypes.
    if (Object.hasOwn(Object.prototype, 'polluted')) violations.push('polluted Object.prototype');
    const health = (await app.inject({ method: 'GET', url: '/healthz' })) as unknown as Answer;
    if (health.statusCode !== 200) violations.push(`/healthz answered ${health.statusCode} afterwards`);
    if (violations.length === 0) return;
    const bug = target.knownBugs?.find((candidate) => candidate.operationId === operation.operationId && candidate.explains?.(request, answer, violations));
    if (bug) {
      bugHits.set(bug.title, (bugHits.get(bug.title) ?? 0) + 1);
      return;
    }
    assert.fail(`${label} -> ${answer?.statusCode ?? 'still waiting'}\n${violations.join('\n')}`);
  }

  for (const operation of operations) {
    it(`${operation.operationId} (${operation.method} ${operation.path}${operation.callers.length > 0 ? `, ${operation.callers.join(' or ')}` : ', open'})`, async (t) => {
      const statuses = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(requestsFor(operation, target.known()), async (request) => {
          await exercise(operation, request, statuses);
        }),
        { seed: fuzzSeed, numRuns: fuzzRuns, includeErrorInReport: true },
      );
      // How far the requests got: a run of only 4xx would say the generators miss the operation.
      t.diagnostic(`answers: ${[...statuses].sort(([a], [b]) => a.localeCompare(b)).map(([status, count]) => `${status}×${count}`).join(' ')}`);
      const hits = target.knownBugs?.filter((bug) => bug.operationId === operation.operationId && bugHits.has(bug.title)) ?? [];
      for (const bug of hits) t.diagnostic(`known bug seen ${bugHits.get(bug.title)} times: ${bug.title}`);
      const ready = (await target.app().inject({ method: 'GET', url: '/readyz' })) as unknown as Answer;
      assert.equal(ready.statusCode, 200, `/readyz after fuzzing ${operation.operationId}: ${ready.body}`);
    });
  }

  for (const bug of target.knownBugs ?? []) {
    it(`known bug, still there: ${bug.title}`, async () => {
      assert.ok(byId.has(bug.operationId), `${bug.operationId} is not an operation of the ${target.contract} contract`);
      const answer = (await target.app().inject(bug.reproduce() as never)) as unknown as Answer;
      assert.ok(await bug.stillThere(answer), `the bug no longer reproduces (${answer.statusCode} ${answer.body.slice(0, 300)}): remove it from the known bugs`);
    });
  }
}

function documentsStatus(contract: ContractName, operation: ContractOperation, status: string): boolean {
  const item = loadResolvedContract(contract).paths[operation.path];
  return item?.[operation.method.toLowerCase()]?.responses[status] !== undefined;
}
