import assert from 'node:assert/strict';
import { pipeline, Transform, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { loadResolvedContract, type ContractName, type OpenApiOperation } from '@duplex/contracts';
import { operationIndex, type DocumentedOperation } from './operations.ts';
import { parseSse } from '@duplex/testkit';
import { createSchemaValidator, describeErrors, SchemaCache } from './schemas.ts';
import type { App, InjectRequest, InjectResponse } from './services.ts';

/** One answer a service sent, as it left the service (after serialization). */
export interface Exchange {
  requestId: string;
  operationId: string | undefined;
  method: string;
  url: string;
  status: number;
  contentType: string | undefined;
  /** The names of the response headers, lower case. */
  headers: string[];
  /** The body; a streamed body (an event stream) grows here as it is sent. */
  payload: string | undefined;
  /** Whether the request came over a socket (from another service) rather than by inject. */
  overSocket: boolean;
}

/** `Text/Plain; Version=0.0.4` as `{ type: 'text/plain', parameters: ['version=0.0.4'] }`. */
function parseMediaType(value: string): { type: string; parameters: string[] } {
  const [type = '', ...parameters] = value.split(';').map((part) => part.trim().toLowerCase().replace(/\s*=\s*/, '='));
  return { type, parameters: parameters.filter((parameter) => parameter !== '') };
}

type ResponseDefinition = OpenApiOperation['responses'][string] & { headers?: Record<string, { required?: boolean }> };

/** A streamed media type may describe each of its messages with `x-item-schema` (OpenAPI 3.2's `itemSchema`). */
type MediaDefinition = { schema: Record<string, unknown>; 'x-item-schema'?: Record<string, unknown> };

const isStream = (payload: unknown): payload is Readable => typeof (payload as { pipe?: unknown } | null)?.pipe === 'function';

const schemaCache = new SchemaCache(createSchemaValidator({ utcOnly: true }));

/**
 * Records every answer of the apps it observes and checks each against the service's
 * contract: the status must be documented for the operation, the content type must be one
 * the contract names for that status, the body must match that media type's schema, and
 * every header the contract requires must be sent.
 * Answers sent over sockets (to the services' own clients) are recorded too, and checked by
 * `verifyAll`.
 */
export class ContractRecorder {
  readonly exchanges: Exchange[] = [];
  private readonly operations: Map<string, DocumentedOperation>;
  private readonly verified = new Map<string, Set<number>>();

  constructor(readonly contract: ContractName) {
    this.operations = operationIndex(loadResolvedContract(contract));
  }

  /** Must be called before the app is ready, so the hook covers every route. */
  observe(app: App): void {
    app.addHook('onSend', async (request, reply, payload) => {
      const { config } = request.routeOptions;
      const routeOperationId = 'operationId' in config ? config.operationId : undefined;
      const operationId = typeof routeOperationId === 'string' ? routeOperationId : undefined;
      const contentType = reply.getHeader('content-type');
      const exchange: Exchange = {
        requestId: String(request.id),
        operationId,
        method: request.method,
        url: request.url,
        status: reply.statusCode,
        contentType: typeof contentType === 'string' ? contentType : undefined,
        headers: Object.keys(reply.getHeaders()).map((name) => name.toLowerCase()),
        payload: typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : undefined,
        // light-my-request names itself in the user agent; the services' HTTP clients do not.
        overSocket: request.headers['user-agent'] !== 'lightMyRequest',
      };
      this.exchanges.push(exchange);
      if (!isStream(payload)) return payload;
      // A streamed body is recorded as it passes; closing either end closes both, as before.
      exchange.payload = '';
      const decoder = new StringDecoder('utf8');
      const tap = new Transform({
        transform(chunk: Buffer | string, _encoding, done) {
          exchange.payload += typeof chunk === 'string' ? chunk : decoder.write(chunk);
          done(null, chunk);
        },
      });
      pipeline(payload, tap, () => undefined);
      return tap;
    });
  }

  /**
   * Injects a request that the test expects `operationId` to answer with `status`, and checks
   * the answer against the contract. Returns the response for further assertions.
   */
  async call(app: App, operationId: string, status: number, options: InjectRequest): Promise<InjectResponse> {
    assert.ok(this.operations.has(operationId), `${this.contract} has no operation ${operationId}`);
    const requestId = `contract-${this.contract}-${this.exchanges.length}-${Math.random().toString(36).slice(2, 10)}`;
    const response = await app.inject({ ...options, headers: { ...options.headers, 'x-request-id': requestId } });
    const exchange = this.exchanges.find((candidate) => candidate.requestId === requestId);
    assert.ok(exchange, `no answer recorded for ${options.method} ${options.url}`);
    assert.equal(exchange.operationId, operationId, `${options.method} ${options.url} was answered by ${exchange.operationId ?? 'no operation'}: ${response.body}`);
    assert.equal(response.statusCode, status, `${operationId} answered ${response.statusCode}: ${response.body}`);
    this.check(exchange);
    // What left the service is what the client got.
    assert.equal(response.body, exchange.payload ?? '');
    assert.equal(response.headers['content-type'], exchange.contentType);
    return response;
  }

  /** Checks one answer against the contract; throws an AssertionError naming what is wrong. */
  check(exchange: Exchange): void {
    const where = `${this.contract} ${exchange.operationId ?? '(no operation)'} ${exchange.method} ${exchange.url} → ${exchange.status}`;
    assert.ok(exchange.operationId !== undefined, `${where}: the route is not an operation of the contract`);
    const documented = this.operations.get(exchange.operationId);
    assert.ok(documented, `${where}: the contract has no such operation`);
    const status = String(exchange.status);
    const responses = documented.operation.responses;
    const definition: ResponseDefinition | undefined = responses[status] ?? responses[`${status[0]}XX`] ?? responses.default;
    assert.ok(definition, `${where}: status ${status} is not documented (documented: ${Object.keys(responses).join(', ')}); body ${exchange.payload ?? ''}`);
    for (const [name, header] of Object.entries(definition.headers ?? {})) {
      if (header.required === true) assert.ok(exchange.headers.includes(name.toLowerCase()), `${where}: the required header ${name} is missing`);
    }

    const content = definition.content ?? {};
    const mediaTypes = Object.keys(content);
    if (mediaTypes.length === 0) {
      assert.equal(exchange.payload ?? '', '', `${where}: the contract documents no body, but one was sent`);
      return;
    }
    // A documented media type matches when the answer has its type and every parameter it names
    // (`text/plain; version=0.0.4` is answered as `text/plain; version=0.0.4; charset=utf-8`).
    const answered = exchange.contentType === undefined ? undefined : parseMediaType(exchange.contentType);
    const documentedType = mediaTypes.find((candidate) => {
      const documented = parseMediaType(candidate);
      return answered !== undefined && documented.type === answered.type && documented.parameters.every((parameter) => answered.parameters.includes(parameter));
    });
    assert.ok(documentedType !== undefined && answered !== undefined, `${where}: content type ${exchange.contentType ?? '(none)'} is not the documented ${mediaTypes.join(' or ')}`);
    const mediaType = answered.type;
    const schema = content[documentedType]?.schema;
    assert.ok(schema, `${where}: ${documentedType} has no schema`);
    let body: unknown = exchange.payload ?? '';
    if (mediaType.endsWith('json')) {
      try {
        body = JSON.parse(exchange.payload ?? '');
      } catch {
        assert.fail(`${where}: the ${mediaType} body is not JSON: ${exchange.payload ?? '(empty)'}`);
      }
    }
    const validate = schemaCache.get(`${this.contract} ${exchange.operationId} ${status} ${documentedType}`, schema);
    assert.ok(validate(body), `${where}: the body does not match the ${mediaType} schema: ${describeErrors(validate.errors)}\n${exchange.payload ?? ''}`);
    const itemSchema = (content[documentedType] as MediaDefinition | undefined)?.['x-item-schema'];
    if (mediaType === 'text/event-stream' && itemSchema) {
      // Each complete message, its data decoded from JSON; a message cut off by the client's leaving is not judged.
      const { messages } = parseSse(exchange.payload ?? '');
      const validateItem = schemaCache.get(`${this.contract} ${exchange.operationId} ${status} ${documentedType} item`, itemSchema);
      for (const message of messages) {
        let data: unknown;
        try {
          data = JSON.parse(message.data);
        } catch {
          assert.fail(`${where}: an event's data is not JSON: ${message.data}`);
        }
        const item = { ...message, data };
        assert.ok(validateItem(item), `${where}: an event does not match the item schema: ${describeErrors(validateItem.errors)}\n${JSON.stringify(item)}`);
      }
    }
    const statuses = this.verified.get(exchange.operationId) ?? new Set<number>();
    statuses.add(exchange.status);
    this.verified.set(exchange.operationId, statuses);
  }

  /**
   * Checks every answer recorded so far, including those sent over sockets, except those
   * `outside` names (answers that are no operation's, such as a 404 for an unknown route).
   * Returns how many were checked.
   */
  verifyAll(outside: (exchange: Exchange) => boolean = () => false): number {
    const failures: string[] = [];
    let checked = 0;
    for (const exchange of this.exchanges) {
      if (outside(exchange)) continue;
      checked += 1;
      try {
        this.check(exchange);
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
    assert.deepEqual(failures, [], `${failures.length} of ${checked} answers break the ${this.contract} contract`);
    return checked;
  }

  /** The operations no checked answer has come from, and those with no checked 2xx answer. */
  coverage(): { unexercised: string[]; withoutSuccess: string[]; statuses: Record<string, number[]> } {
    const statuses: Record<string, number[]> = {};
    for (const [operationId, seen] of this.verified) statuses[operationId] = [...seen].sort((a, b) => a - b);
    const all = [...this.operations.keys()];
    return {
      unexercised: all.filter((operationId) => !this.verified.has(operationId)),
      withoutSuccess: all.filter((operationId) => ![...(this.verified.get(operationId) ?? [])].some((status) => status >= 200 && status < 300)),
      statuses,
    };
  }
}
