import type { JsonSchema, OpenApiDocument, OpenApiParameter } from '@duplex/contracts';
import fc from 'fast-check';

/**
 * Request generators for the fuzz tests of every service, built from a resolved OpenAPI
 * contract: for each operation, requests whose parts follow the contract's schemas (valid-ish:
 * ids are often ones the service knows, so requests get past the lookups), and the same
 * requests mutated (wrong types, unknown or missing fields, odd text, broken JSON, other media
 * types, odd path segments and query strings, other credentials).
 */

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';

export interface ContractOperation {
  operationId: string;
  method: HttpMethod;
  /** The contract's path template, such as `/v1/tasks/{id}:cancel`. */
  path: string;
  parameters: OpenApiParameter[];
  body: JsonSchema | undefined;
  /** The callers its `x-duplex-caller` names, each with a credential of its own; none on an open operation. */
  callers: string[];
}

/** Values the server knows, so that generated requests reach the code behind its lookups. */
export interface KnownValues {
  /** Ids for a path parameter, by the collection segment before it (`tasks` in `/v1/tasks/{id}`). */
  byCollection: Record<string, readonly string[]>;
  /** Values for body properties and query or header parameters, by name. */
  byName: Record<string, readonly unknown[]>;
  /** A token of the least role, to be refused by the operations that need more (the server's users). */
  viewerToken?: string;
  /**
   * The credential of each caller that the contract's `x-duplex-caller` names. When given, a
   * request carries a credential of one of its operation's callers (none on an open operation),
   * and the authorization mutations send none, a credential of a caller the operation does not
   * name, one of `foreignTokens`, or a near miss of the right one. Without it, requests name no
   * authorization and the test's inject adds its own.
   */
  credentials?: Record<string, string>;
  /** Tokens that no operation of the service takes: another cluster's token, the join token, another agent's credential. */
  foreignTokens?: readonly string[];
  /**
   * Whole bodies the service takes, by operationId, for half of that operation's requests (before
   * their mutations): what a contract cannot say, such as which parameters each kind of work takes,
   * would otherwise leave almost every generated body refused before the code behind it runs.
   */
  bodies?: Record<string, readonly unknown[]>;
}

export interface FuzzRequest {
  method: HttpMethod;
  url: string;
  /** `authorization: undefined` sends no token; without the key the test's inject adds its own (the server's admin token). */
  headers: Record<string, string | undefined>;
  /** The body as sent, text or bytes, so that it can be broken JSON or broken UTF-8. */
  payload?: string | Buffer;
  /** What was done to the request the contract describes, in order. */
  mutations: string[];
}

const methods = ['get', 'put', 'post', 'delete', 'patch'] as const;

export function contractOperations(document: OpenApiDocument): ContractOperation[] {
  const operations: ContractOperation[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of methods) {
      const operation = item[method];
      if (!operation) continue;
      operations.push({
        operationId: operation.operationId,
        method: method.toUpperCase() as HttpMethod,
        path,
        parameters: operation.parameters ?? [],
        body: operation.requestBody?.content['application/json']?.schema,
        callers: callersOf(operation['x-duplex-caller']),
      });
    }
  }
  return operations;
}

/** The callers an operation names in x-duplex-caller: none, one, or a list. */
function callersOf(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

// ---------------------------------------------------------------------------------------------
// Values from JSON Schema

const asNumber = (value: unknown): number | undefined => (typeof value === 'number' ? value : undefined);

function typesOf(schema: JsonSchema): string[] {
  if (Array.isArray(schema.type)) return schema.type as string[];
  if (typeof schema.type === 'string') return [schema.type];
  if (schema.properties !== undefined) return ['object'];
  if (schema.items !== undefined) return ['array'];
  return ['string'];
}

/** Whether a known value has one of the schema's types: names repeat (a problem's `type`, a result's `device`). */
function fits(value: unknown, schema: JsonSchema): boolean {
  const type = Array.isArray(value) ? 'array' : value === null ? 'null' : Number.isInteger(value) ? 'integer' : typeof value;
  const types = typesOf(schema);
  return types.includes(type) || (type === 'integer' && types.includes('number'));
}

/** A value of the schema, or (three times out of four) one of the known values of that name that fit it. */
function schemaValue(schema: JsonSchema, known: KnownValues, name?: string, depth = 0): fc.Arbitrary<unknown> {
  const generated = fromSchema(schema, known, depth);
  const hints = name === undefined ? undefined : known.byName[name]?.filter((hint) => fits(hint, schema));
  if (!hints || hints.length === 0) return generated;
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...hints) }, { weight: 1, arbitrary: generated });
}

function fromSchema(schema: JsonSchema, known: KnownValues, depth: number): fc.Arbitrary<unknown> {
  if ('const' in schema) return fc.constant(schema.const);
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return fc.constantFrom(...(schema.enum as unknown[]));
  const choices = (schema.oneOf ?? schema.anyOf) as JsonSchema[] | undefined;
  if (choices) return fc.oneof(...choices.map((choice) => schemaValue(choice, known, undefined, depth + 1)));
  const types = typesOf(schema);
  if (types.length > 1) return fc.oneof(...types.map((type) => fromSchema({ ...schema, type }, known, depth)));
  switch (types[0]) {
    case 'string':
      return stringOf(schema);
    case 'integer':
      return integerOf(schema);
    case 'number':
      return fc.double({ noNaN: true, noDefaultInfinity: true });
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array': {
      const minLength = asNumber(schema.minItems) ?? 0;
      // Arrays stay short: a thousand generated reports would only slow the run down.
      const maxLength = Math.min(asNumber(schema.maxItems) ?? 3, Math.max(minLength, 3));
      return fc.array(schemaValue((schema.items as JsonSchema | undefined) ?? {}, known, undefined, depth + 1), { minLength, maxLength });
    }
    default:
      return objectOf(schema, known, depth);
  }
}

function stringOf(schema: JsonSchema): fc.Arbitrary<string> {
  const minLength = asNumber(schema.minLength) ?? 0;
  const maxLength = asNumber(schema.maxLength);
  let base: fc.Arbitrary<string>;
  if (schema.format === 'date-time') {
    base = fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((date) => date.toISOString());
  } else if (schema.format === 'uri') {
    base = fc.webUrl({ validSchemes: ['http', 'https'] });
  } else if (typeof schema.pattern === 'string') {
    base = fc.stringMatching(new RegExp(schema.pattern));
  } else {
    base = fc.string({ unit: 'grapheme', minLength, maxLength: Math.min(maxLength ?? 40, Math.max(minLength, 40)) });
  }
  return base.filter((text) => text.length >= minLength && (maxLength === undefined || text.length <= maxLength));
}

function integerOf(schema: JsonSchema): fc.Arbitrary<number> {
  const min = Math.max(asNumber(schema.minimum) ?? Number.MIN_SAFE_INTEGER, Number.MIN_SAFE_INTEGER);
  const max = Math.min(asNumber(schema.maximum) ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const whole = fc.bigInt({ min: BigInt(min), max: BigInt(max) }).map(Number);
  // Small values are the likely ones (attempts, versions, limits); the bounds are the interesting ones.
  const smallMin = Math.max(min, -1000);
  const smallMax = Math.min(max, 1000);
  const small = smallMin <= smallMax ? [fc.integer({ min: smallMin, max: smallMax })] : [];
  return fc.oneof(...small, whole, fc.constantFrom(min, max));
}

function objectOf(schema: JsonSchema, known: KnownValues, depth: number): fc.Arbitrary<unknown> {
  const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
  const names = Object.keys(properties);
  if (names.length === 0 || depth > 5) {
    if (schema.additionalProperties === false || schema.maxProperties === 0 || depth > 5) return fc.constant({});
    return fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 });
  }
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const name of names) model[name] = schemaValue(properties[name]!, known, name, depth + 1);
  const required = ((schema.required ?? []) as string[]).filter((name) => names.includes(name));
  return fc.record(model, { requiredKeys: required });
}

// ---------------------------------------------------------------------------------------------
// Odd values

const nestedArrays = (depth: number): unknown => {
  let value: unknown = 0;
  for (let level = 0; level < depth; level += 1) value = [value];
  return value;
};

/** Text that tends to break parsers, path handling, Postgres text or jsonb columns. */
const oddStrings = [
  '',
  ' ',
  '../etc',
  'a/b',
  '%00',
  'a\u0000b',
  '\ud800',
  'x\udfff',
  '\uffff',
  '\u202eevil',
  'NaN',
  '1e400',
  '0x10',
  'null',
  'true',
  '__proto__',
  'tsk_ghost',
  '\u{1d54f}'.repeat(50),
  "'; drop table tasks; --",
  '\r\n\r\nHTTP/1.1 200 OK',
];

const oddNumbers = [0, -1, -0, 0.5, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 1e21, Number.MAX_VALUE, -Number.MAX_VALUE, 1e-300];

const hugeString = fc.integer({ min: 1_000, max: 70_000 }).map((length) => 'x'.repeat(length));

const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 2, arbitrary: fc.constantFrom(...oddStrings) },
  { weight: 2, arbitrary: fc.constantFrom(...oddNumbers) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, true, false, [], {}, [null], { '': null }) },
  { weight: 1, arbitrary: hugeString },
  // Deeper values come as text (body-text `deep`): JSON.stringify would run out of stack here.
  { weight: 1, arbitrary: fc.integer({ min: 10, max: 500 }).map(nestedArrays) },
);

/** Header values as a client could send them: visible ASCII, spaces and Latin-1 bytes. */
const headerText = (maxLength: number) => fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).map((code) => String.fromCharCode(code)), maxLength });

// ---------------------------------------------------------------------------------------------
// Requests

/** A request as parts, before the URL and the body text are made. */
interface Draft {
  method: HttpMethod;
  /** Each path parameter's segment, already percent-encoded. */
  segments: Record<string, string>;
  /** `name=value` pairs, already percent-encoded. */
  query: string[];
  headers: Record<string, string | undefined>;
  /** The JSON body, when there is one and it is still JSON. */
  json: { value: unknown } | undefined;
  /** Text or bytes sent instead of the JSON body. */
  raw: string | Buffer | undefined;
}

type Mutation =
  | { kind: 'body-replace'; at: number; value: unknown }
  | { kind: 'body-delete'; at: number }
  | { kind: 'body-add'; at: number; key: string; value: unknown }
  | { kind: 'body-text'; text: BodyText }
  | { kind: 'content-type'; value: string | null }
  | { kind: 'segment'; at: number; segment: string }
  | { kind: 'query-value'; at: number; value: string }
  | { kind: 'query-extra'; key: string; value: string }
  | { kind: 'query-raw'; text: string }
  | { kind: 'header'; name: string; value: string | null }
  | { kind: 'method'; method: HttpMethod };

type BodyText =
  | { how: 'truncate'; at: number }
  | { how: 'replace'; text: string }
  | { how: 'bom' }
  | { how: 'invalid-utf8'; at: number }
  | { how: 'prototype'; key: '__proto__' | 'constructor' }
  | { how: 'duplicate-key'; value: unknown }
  | { how: 'deep'; depth: number; open: '[' | '{"a":' }
  | { how: 'oversize' };

/** Percent-encodes like a browser's URL encoder: a lone surrogate, which has no UTF-8 form, goes as U+FFFD. */
function encode(text: string): string {
  return encodeURIComponent(text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'));
}

function textOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.map((item) => String(item));
  return [String(value)];
}

/** Every path into a JSON value, the root first; at most `limit` of them. */
function pathsOf(value: unknown, limit = 200): (string | number)[][] {
  const found: (string | number)[][] = [[]];
  const queue: { path: (string | number)[]; value: unknown }[] = [{ path: [], value }];
  while (queue.length > 0 && found.length < limit) {
    const { path, value: current } = queue.shift()!;
    if (current === null || typeof current !== 'object') continue;
    for (const [key, child] of Object.entries(current)) {
      const childPath = [...path, Array.isArray(current) ? Number(key) : key];
      found.push(childPath);
      queue.push({ path: childPath, value: child });
    }
  }
  return found;
}

function containerAt(root: unknown, path: (string | number)[]): Record<string | number, unknown> | undefined {
  let current = root;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string | number, unknown>)[key];
  }
  return current !== null && typeof current === 'object' ? (current as Record<string | number, unknown>) : undefined;
}

/** Sets an own property, so that `__proto__` is a key of the JSON text and not the prototype. */
function setOwn(target: Record<string | number, unknown>, key: string | number, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function applyMutation(draft: Draft, mutation: Mutation, operation: ContractOperation): string {
  switch (mutation.kind) {
    case 'body-replace':
    case 'body-delete':
    case 'body-add': {
      if (!draft.json) return 'body mutation skipped (no JSON body)';
      const root = structuredClone(draft.json.value);
      const paths = pathsOf(root);
      if (mutation.kind === 'body-add') {
        const objects = paths.filter((path) => {
          const target = containerAt(root, path);
          return target !== undefined && !Array.isArray(target);
        });
        const path = objects[mutation.at % Math.max(objects.length, 1)];
        const target = path && containerAt(root, path);
        if (!path || !target) return 'body-add skipped (no object)';
        setOwn(target, mutation.key, mutation.value);
        draft.json = { value: root };
        return `body: add ${JSON.stringify(mutation.key)} at /${path.join('/')}`;
      }
      const path = paths[mutation.at % paths.length]!;
      if (path.length === 0) {
        draft.json = mutation.kind === 'body-replace' ? { value: mutation.value } : undefined;
        return mutation.kind === 'body-replace' ? 'body: replaced whole' : 'body: removed';
      }
      const parent = containerAt(root, path.slice(0, -1))!;
      const key = path.at(-1)!;
      if (mutation.kind === 'body-replace') setOwn(parent, key, mutation.value);
      else if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key];
      draft.json = { value: root };
      return `body: ${mutation.kind === 'body-replace' ? 'replace' : 'delete'} /${path.join('/')}`;
    }
    case 'body-text': {
      const text = draft.raw !== undefined ? draft.raw.toString() : draft.json ? JSON.stringify(draft.json.value) : '';
      draft.raw = bodyText(text, mutation.text);
      draft.json = undefined;
      if (!('content-type' in draft.headers)) draft.headers['content-type'] = 'application/json';
      return `body text: ${mutation.text.how}`;
    }
    case 'content-type':
      if (mutation.value === null) delete draft.headers['content-type'];
      else draft.headers['content-type'] = mutation.value;
      return `content-type: ${mutation.value === null ? 'none' : JSON.stringify(mutation.value)}`;
    case 'segment': {
      const names = Object.keys(draft.segments);
      const name = names[mutation.at % Math.max(names.length, 1)];
      if (name === undefined) return 'segment mutation skipped (no path parameter)';
      draft.segments[name] = mutation.segment;
      return `path ${name}: ${JSON.stringify(mutation.segment)}`;
    }
    case 'query-value': {
      const parameters = operation.parameters.filter((parameter) => parameter.in === 'query');
      const parameter = parameters[mutation.at % Math.max(parameters.length, 1)];
      if (!parameter) return 'query mutation skipped (no query parameter)';
      draft.query = draft.query.filter((pair) => !pair.startsWith(`${encode(parameter.name)}=`));
      draft.query.push(`${encode(parameter.name)}=${encode(mutation.value)}`);
      return `query ${parameter.name}: ${JSON.stringify(mutation.value)}`;
    }
    case 'query-extra':
      draft.query.push(`${encode(mutation.key)}=${encode(mutation.value)}`);
      return `query: extra ${JSON.stringify(mutation.key)}`;
    case 'query-raw':
      draft.query.push(mutation.text);
      return `query: raw ${JSON.stringify(mutation.text)}`;
    case 'header':
      if (mutation.value === null) {
        if (mutation.name === 'authorization') draft.headers.authorization = undefined;
        else delete draft.headers[mutation.name];
      } else draft.headers[mutation.name] = mutation.value;
      return `header ${mutation.name}: ${mutation.value === null ? 'none' : JSON.stringify(mutation.value.slice(0, 80))}`;
    case 'method':
      draft.method = mutation.method;
      return `method: ${mutation.method}`;
  }
}

function bodyText(text: string, change: BodyText): string | Buffer {
  const isObject = /^\s*\{/.test(text) && /\}\s*$/.test(text);
  switch (change.how) {
    case 'truncate':
      return text.slice(0, text.length === 0 ? 0 : change.at % text.length);
    case 'replace':
      return change.text;
    case 'bom':
      return `\ufeff${text}`;
    case 'invalid-utf8': {
      const bytes = Buffer.from(text);
      const at = bytes.length === 0 ? 0 : change.at % bytes.length;
      return Buffer.concat([bytes.subarray(0, at), Buffer.from([0xc3, 0x28, 0xff, 0xc0, 0xaf]), bytes.subarray(at)]);
    }
    case 'prototype':
      return isObject ? text.replace(/^\s*\{/, `{"${change.key}":{"polluted":true${change.key === 'constructor' ? ',"prototype":{"polluted":true}' : ''}},`).replace(/,\}$/, '}') : text;
    case 'duplicate-key': {
      // JSON.parse keeps the last of two equal keys: the odd value comes second.
      const first = /^\s*\{\s*("(?:[^"\\]|\\.)*")\s*:/.exec(text)?.[1];
      return isObject && first ? text.replace(/\}\s*$/, `,${first}:${JSON.stringify(change.value) ?? 'null'}}`) : text;
    }
    case 'deep':
      return `${change.open.repeat(change.depth)}1${(change.open === '[' ? ']' : '}').repeat(change.depth)}`;
    case 'oversize':
      return isObject ? text.replace(/\}\s*$/, `,"padding":"${'x'.repeat(1_100_000)}"}`) : 'x'.repeat(1_100_000);
  }
}

const contentTypes = [
  'application/json; charset=utf-8',
  'APPLICATION/JSON',
  'application/json;charset=utf-16',
  'application/json, text/plain',
  'text/plain',
  'text/json',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/octet-stream',
  'application/problem+json',
  'application/json-patch+json',
  '',
  '*/*',
  ';',
];

const oddSegments = ['%zz', '%', '%00', '%2F', '..', '.', '%2e%2e', '..%2F..%2Fetc', '%C0%AF', '%ff', '%E2%80%AE', 'a%20b', '*', ';x', '%3A', '~', 'x:cancel', 'A'.repeat(300), '%F0%9F%92%A9', '%EF%BF%BD'];

const oddQueryValues = ['', '-1', '0', '-0', '1e400', '1e3', 'NaN', 'Infinity', '99999999999999999999999', '1.5', '0x10', ' 1', 'true', 'null', '[]', '{}', '\u0000', 'ss1\u0000', '../x', 'é', '\u{1d54f}', 'a,,b', ','];

const oddQueryKeys = ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'limit[]', 'a[b]', '', 'bogus'];

const rawQueries = ['%', '%zz', '&&&', '=', '==', 'a=%ff', '&limit', 'limit', 'limit=1&limit=2', '%E0%A4%A', 'limit=1;limit=2', '__proto__[x]=1', 'type=&type='];

function mutationOf(operation: ContractOperation, known: KnownValues): fc.Arbitrary<Mutation> {
  const hasBody = operation.body !== undefined;
  const hasSegments = operation.path.includes('{');
  const hasQuery = operation.parameters.some((parameter) => parameter.in === 'query');
  const headerNames = operation.parameters.filter((parameter) => parameter.in === 'header').map((parameter) => parameter.name.toLowerCase());
  const bodyTexts: fc.Arbitrary<BodyText> = fc.oneof(
    fc.record({ how: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ how: fc.constant('replace' as const), text: fc.oneof(fc.constantFrom('', 'null', '[]', '"x"', '0', 'true', '{', '}', '{"a":}', 'NaN', '{"a":1}{"b":2}', '\u0000', '{"a":1,}'), fc.string({ maxLength: 40 })) }),
    fc.constant({ how: 'bom' as const }),
    fc.record({ how: fc.constant('invalid-utf8' as const), at: fc.nat() }),
    fc.record({ how: fc.constant('prototype' as const), key: fc.constantFrom('__proto__' as const, 'constructor' as const) }),
    fc.record({ how: fc.constant('duplicate-key' as const), value: oddValue }),
    fc.record({ how: fc.constant('deep' as const), depth: fc.integer({ min: 100, max: 20_000 }), open: fc.constantFrom('[' as const, '{"a":' as const) }),
  );
  const mutations: fc.WeightedArbitrary<Mutation>[] = [
    // With credentials per caller, about a quarter of the requests go without the right one.
    { weight: known.credentials ? 4 : 2, arbitrary: fc.record({ kind: fc.constant('header' as const), name: fc.constant('authorization'), value: authorizationValue(operation, known) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('header' as const),
        name: fc.constantFrom('x-request-id', 'traceparent', 'accept', 'last-event-id', 'idempotency-key', ...headerNames),
        value: fc.oneof(headerText(60), fc.constantFrom('', '00-' + '0'.repeat(32) + '-' + '0'.repeat(16) + '-01', 'ff-' + 'a'.repeat(32) + '-' + 'b'.repeat(16) + '-01', 'text/html', 'x'.repeat(8_000)), fc.constant(null)),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('content-type' as const), value: fc.oneof(fc.constantFrom(...contentTypes), fc.constant(null), headerText(30)) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('method' as const), method: fc.constantFrom<HttpMethod>('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH').filter((method) => method !== operation.method) }) },
    // A body where the contract has none.
    { weight: hasBody ? 0 : 1, arbitrary: fc.record({ kind: fc.constant('body-text' as const), text: bodyTexts }) },
  ];
  if (hasBody) {
    mutations.push(
      { weight: 5, arbitrary: fc.record({ kind: fc.constant('body-replace' as const), at: fc.nat(), value: oddValue }) },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('body-delete' as const), at: fc.nat() }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('body-add' as const), at: fc.nat(), key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'extra', ''), fc.string({ maxLength: 10 })), value: oddValue }) },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('body-text' as const), text: fc.oneof({ weight: 12, arbitrary: bodyTexts }, { weight: 1, arbitrary: fc.constant({ how: 'oversize' as const }) }) }) },
    );
  }
  if (hasSegments) {
    mutations.push({
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('segment' as const),
        at: fc.nat(),
        segment: fc.oneof(fc.constantFrom(...oddSegments), fc.string({ unit: 'grapheme', maxLength: 30 }).map(encode), fc.string({ unit: 'binary', maxLength: 10 }).map(encode)),
      }),
    });
  }
  if (hasQuery) {
    mutations.push({ weight: 4, arbitrary: fc.record({ kind: fc.constant('query-value' as const), at: fc.nat(), value: fc.oneof(fc.constantFrom(...oddQueryValues), fc.string({ unit: 'grapheme', maxLength: 20 }), fc.constant('9'.repeat(5_000))) }) });
  }
  mutations.push(
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('query-extra' as const), key: fc.oneof(fc.constantFrom(...oddQueryKeys), fc.string({ maxLength: 10 })), value: fc.string({ maxLength: 10 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('query-raw' as const), text: fc.oneof(fc.constantFrom(...rawQueries), fc.string({ unit: 'binary-ascii', maxLength: 20 })) }) },
  );
  return fc.oneof(...mutations.filter((mutation) => mutation.weight > 0));
}

const malformedAuthorizations = ['Bearer dpx_bogus', 'Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'bearer dpx_bogus', 'Bearer  dpx_x', `Bearer ${'a'.repeat(10_000)}`, 'Bearer é'];

/** An authorization header that is not the operation's credential (null: none at all). */
function authorizationValue(operation: ContractOperation, known: KnownValues): fc.Arbitrary<string | null> {
  if (!known.credentials) {
    return fc.oneof(
      fc.constant(null),
      ...(known.viewerToken === undefined ? [] : [fc.constant(`Bearer ${known.viewerToken}`)]),
      fc.constantFrom(...malformedAuthorizations),
      headerText(40).map((text) => `Bearer ${text}`),
    );
  }
  const { right, wrong } = tokensOf(operation, known);
  if (known.viewerToken !== undefined) wrong.push(known.viewerToken);
  // A right token sent another way than `Bearer <token>`, or changed by one character.
  const nearMisses = right.flatMap((token) => [`Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, token, `Basic ${Buffer.from(token).toString('base64')}`, `Token ${token}`, `Bearer ${token}\u00a0`]);
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant(null) },
    ...(wrong.length > 0 ? [{ weight: 4, arbitrary: fc.constantFrom(...wrong).map((token) => `Bearer ${token}`) }] : []),
    ...(nearMisses.length > 0 ? [{ weight: 2, arbitrary: fc.constantFrom(...nearMisses) }] : []),
    { weight: 1, arbitrary: fc.constantFrom(...malformedAuthorizations) },
    { weight: 1, arbitrary: headerText(40).map((text) => `Bearer ${text}`) },
  );
}

/** The tokens an operation takes (its callers' credentials), and the ones it must refuse. */
function tokensOf(operation: ContractOperation, known: KnownValues): { right: string[]; wrong: string[] } {
  const credentials = known.credentials ?? {};
  const right = operation.callers.flatMap((caller) => (credentials[caller] === undefined ? [] : [credentials[caller]]));
  const wrong = [...Object.values(credentials), ...(known.foreignTokens ?? [])].filter((token) => !right.includes(token));
  return { right, wrong: [...new Set(wrong)] };
}

/** Whether a request's authorization header is a credential of one of these callers, as `requestsFor` sends it. */
export function carriesCredentialOf(request: Pick<FuzzRequest, 'headers'>, callers: readonly string[], known: KnownValues): boolean {
  const header = request.headers.authorization;
  return callers.some((caller) => known.credentials?.[caller] !== undefined && header === `Bearer ${known.credentials[caller]}`);
}

/** The request the contract describes, with values from the schemas and the known ids, and the credential of one of its callers. */
function validDraft(operation: ContractOperation, known: KnownValues): fc.Arbitrary<Draft> {
  const draft = contractDraft(operation, known);
  if (!known.credentials) return draft;
  const { right } = tokensOf(operation, known);
  const authorization = right.length > 0 ? fc.constantFrom(...right).map((token) => `Bearer ${token}`) : fc.constant(undefined);
  return fc.tuple(draft, authorization).map(([parts, value]) => ({ ...parts, headers: { ...parts.headers, authorization: value } }));
}

function contractDraft(operation: ContractOperation, known: KnownValues): fc.Arbitrary<Draft> {
  const segmentNames = [...operation.path.matchAll(/([^/{}]*)\/\{([^}]+)\}/g)].map((match) => ({ collection: match[1]!, name: match[2]! }));
  const segments: Record<string, fc.Arbitrary<string>> = {};
  for (const { collection, name } of segmentNames) {
    const parameter = operation.parameters.find((candidate) => candidate.in === 'path' && candidate.name === name);
    const generated = fromSchema(parameter?.schema ?? { type: 'string' }, known, 0).map(String);
    const ids = known.byCollection[collection] ?? [];
    segments[name] = (ids.length > 0 ? fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...ids) }, { weight: 1, arbitrary: generated }) : generated).map(encode);
  }
  const query = operation.parameters
    .filter((parameter) => parameter.in === 'query')
    .map((parameter) =>
      fc
        .option(schemaValue(parameter.schema, known, parameter.name), { nil: undefined, freq: 2 })
        .map((value) => (value === undefined ? [] : textOf(value).map((text) => `${encode(parameter.name)}=${encode(text)}`))),
    );
  const headers = operation.parameters
    .filter((parameter) => parameter.in === 'header')
    .map((parameter) => {
      const value = schemaValue(parameter.schema, known, parameter.name.toLowerCase()).map(String);
      return (parameter.required ? value : fc.option(value, { nil: undefined, freq: 2 })).map((text) => [parameter.name.toLowerCase(), text] as const);
    });
  return fc
    .record({
      segments: fc.record(segments),
      query: fc.tuple(...query).map((pairs) => pairs.flat()),
      headers: fc.tuple(...headers),
      json: operation.body ? bodyOf(operation, operation.body, known).map((value) => ({ value })) : fc.constant(undefined),
    })
    .map(({ segments: filled, query: pairs, headers: headerPairs, json }) => {
      const draft: Draft = { method: operation.method, segments: filled, query: pairs, headers: {}, json, raw: undefined };
      for (const [name, value] of headerPairs) if (value !== undefined) draft.headers[name] = value;
      if (json) draft.headers['content-type'] = 'application/json';
      return draft;
    });
}

function bodyOf(operation: ContractOperation, schema: JsonSchema, known: KnownValues): fc.Arbitrary<unknown> {
  const generated = schemaValue(schema, known);
  const examples = known.bodies?.[operation.operationId] ?? [];
  return examples.length > 0 ? fc.oneof(fc.constantFrom(...examples), generated) : generated;
}

function toRequest(operation: ContractOperation, draft: Draft, mutations: string[]): FuzzRequest {
  const path = operation.path.replace(/\{([^}]+)\}/g, (_, name: string) => draft.segments[name] ?? '');
  const url = draft.query.length > 0 ? `${path}?${draft.query.join('&')}` : path;
  const payload = draft.raw ?? (draft.json ? JSON.stringify(draft.json.value) : undefined);
  const request: FuzzRequest = { method: draft.method, url, headers: draft.headers, mutations };
  if (payload !== undefined) request.payload = payload;
  return request;
}

/** Requests to one operation: one in four as the contract describes it, the rest with one to three mutations. */
export function requestsFor(operation: ContractOperation, known: KnownValues): fc.Arbitrary<FuzzRequest> {
  const mutation = mutationOf(operation, known);
  return fc
    .record({
      draft: validDraft(operation, known),
      mutations: fc.oneof({ weight: 1, arbitrary: fc.constant<Mutation[]>([]) }, { weight: 3, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) }),
    })
    .map(({ draft, mutations }) => {
      // The draft is the arbitrary's value: mutate a copy, so that shrinking starts from the original.
      const copy: Draft = { ...draft, segments: { ...draft.segments }, query: [...draft.query], headers: { ...draft.headers } };
      const done = mutations.map((change) => applyMutation(copy, change, operation));
      return toRequest(operation, copy, done);
    });
}
