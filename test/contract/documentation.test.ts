import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { contractNames, loadResolvedContract, type JsonSchema } from '@duplex/contracts';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { operationsOf } from './support/operations.ts';
import { describeErrors } from './support/schemas.ts';

// What a reader of the contracts in Swagger UI, or a client generator, relies on: every
// operation says what it does and shows what it answers, and no example contradicts its
// schema. The request bodies' examples, and every media type's `example`/`examples`, are
// checked against their schemas in operations.test.ts; this checks the rest: the examples
// written into schemas, parameters and headers, the event stream's sample messages and the
// metrics samples.

interface MediaTypeObject {
  schema?: JsonSchema;
  example?: unknown;
  examples?: Record<string, { value?: unknown }>;
  'x-item-schema'?: JsonSchema;
}

interface ExampleCarrier {
  schema?: JsonSchema;
  example?: unknown;
  examples?: Record<string, { value?: unknown }>;
}

const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats.default(ajv);
const compiled = new Map<string, ValidateFunction>();
/** Across the contracts (not every contract writes examples into its schemas). */
let schemaExamplesChecked = 0;

function validatorFor(schema: JsonSchema): ValidateFunction {
  const key = JSON.stringify(schema);
  let validate = compiled.get(key);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(key, validate);
  }
  return validate;
}

/** `example`, each entry of `examples` (a map of Example objects), or the schema's own `examples`. */
function mediaExamples(media: MediaTypeObject): unknown[] {
  const found: unknown[] = [];
  if (media.example !== undefined) found.push(media.example);
  for (const entry of Object.values(media.examples ?? {})) found.push(entry.value);
  if (Array.isArray(media.schema?.examples)) found.push(...(media.schema.examples as unknown[]));
  return found;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isSuccess = (status: string): boolean => /^2(\d\d|XX)$/.test(status);

const subschemaMaps = ['properties', 'patternProperties', '$defs', 'dependentSchemas'];
const subschemaLists = ['allOf', 'anyOf', 'oneOf', 'prefixItems'];
const subschemaSingles = ['items', 'additionalProperties', 'unevaluatedProperties', 'unevaluatedItems', 'not', 'if', 'then', 'else', 'contains', 'propertyNames'];

/** Every schema in a schema, itself included, with a location to report. */
function* schemasIn(schema: unknown, where: string): Generator<[string, JsonSchema]> {
  if (!isObject(schema)) return;
  yield [where, schema];
  for (const key of subschemaMaps) {
    if (isObject(schema[key])) for (const [name, sub] of Object.entries(schema[key])) yield* schemasIn(sub, `${where}/${key}/${name}`);
  }
  for (const key of subschemaLists) {
    if (Array.isArray(schema[key])) for (const [index, sub] of schema[key].entries()) yield* schemasIn(sub, `${where}/${key}/${index}`);
  }
  for (const key of subschemaSingles) yield* schemasIn(schema[key], `${where}/${key}`);
}

/**
 * Every object of the document that has a schema and may carry examples of it: media types,
 * parameters and headers, wherever they are (operations, components), keyed by location.
 * Example values are data, not document structure, so they are not searched.
 */
function* carriersIn(node: unknown, where: string): Generator<[string, ExampleCarrier]> {
  if (Array.isArray(node)) {
    for (const [index, item] of node.entries()) yield* carriersIn(item, `${where}/${index}`);
    return;
  }
  if (!isObject(node)) return;
  if (isObject(node.schema)) yield [where, node as ExampleCarrier];
  for (const [key, value] of Object.entries(node)) {
    if (key === 'example' || key === 'examples' || key === 'schema' || key === 'x-item-schema') continue;
    yield* carriersIn(value, `${where}/${key}`);
  }
}

/** Every schema of the document: the components' and those under media types, parameters and headers. */
function* documentSchemas(document: Record<string, unknown>): Generator<[string, JsonSchema]> {
  const components = isObject(document.components) ? document.components : {};
  for (const [name, schema] of Object.entries(isObject(components.schemas) ? components.schemas : {})) yield* schemasIn(schema, `#/components/schemas/${name}`);
  for (const [where, carrier] of carriersIn(document, '#')) {
    yield* schemasIn(carrier.schema, `${where}/schema`);
    yield* schemasIn((carrier as MediaTypeObject)['x-item-schema'], `${where}/x-item-schema`);
  }
}

/** The messages of a Server-Sent Events text (WHATWG HTML 9.2): comments and `retry` left out. */
function sseMessages(text: string): { id?: string; event?: string; data: string }[] {
  const messages: { id?: string; event?: string; data: string }[] = [];
  let current: { id?: string; event?: string; data: string[] } = { data: [] };
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (current.data.length > 0) messages.push({ id: current.id, event: current.event, data: current.data.join('\n') });
      current = { data: [] };
      continue;
    }
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') current.id = value;
    else if (field === 'event') current.event = value;
    else if (field === 'data') current.data.push(value);
    else if (field !== 'retry') throw new Error(`'${line}' is not a Server-Sent Events line`);
  }
  if (current.data.length > 0) messages.push({ id: current.id, event: current.event, data: current.data.join('\n') });
  return messages;
}

const metricName = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const sampleLine = new RegExp(`^(${metricName})(\\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*")*\\})? (-?[0-9.e+-]+|NaN|[+-]Inf)( -?[0-9]+)?$`);
const typeLine = new RegExp(`^# TYPE (${metricName}) (counter|gauge|histogram|summary|untyped)$`);
const helpLine = new RegExp(`^# HELP ${metricName} .*$`);

/** What is wrong with a text in the Prometheus exposition format 0.0.4: a line it cannot read, or a sample of no declared family. */
function prometheusTextFaults(text: string): string[] {
  const faults: string[] = [];
  const families = new Map<string, string>();
  let samples = 0;
  for (const line of text.split('\n')) {
    if (line === '' || helpLine.test(line)) continue;
    const declared = typeLine.exec(line);
    if (declared) {
      families.set(declared[1] as string, declared[2] as string);
      continue;
    }
    const sample = sampleLine.exec(line);
    if (!sample) {
      faults.push(`unreadable line: ${line}`);
      continue;
    }
    samples += 1;
    const name = sample[1] as string;
    const family = [name, name.replace(/_(bucket|sum|count)$/, '')].find((candidate) => families.has(candidate));
    if (family === undefined) faults.push(`${name} has no # TYPE line before it`);
  }
  if (samples === 0) faults.push('no sample');
  return faults;
}

for (const name of contractNames) {
  describe(`the ${name} contract documents`, () => {
    const document = loadResolvedContract(name);
    const operations = operationsOf(document);

    it('every operation with a description', () => {
      const without = operations.filter(({ operation }) => typeof operation.description !== 'string' || operation.description.trim() === '');
      assert.deepEqual(
        without.map(({ method, path, operationId }) => `${operationId ?? '?'} (${method} ${path})`),
        [],
      );
    });

    it('every JSON request body with an example', () => {
      const without: string[] = [];
      for (const { operationId, operation } of operations) {
        for (const [mediaType, media] of Object.entries((operation.requestBody?.content ?? {}) as Record<string, MediaTypeObject>)) {
          if (/^application\/(.+\+)?json\b/.test(mediaType) && mediaExamples(media).length === 0) without.push(`${operationId ?? '?'} request ${mediaType}`);
        }
      }
      assert.deepEqual(without, []);
    });

    it('every successful response that has a body with an example', () => {
      const without: string[] = [];
      for (const { operationId, operation } of operations) {
        for (const [status, response] of Object.entries(operation.responses).filter(([code]) => isSuccess(code))) {
          for (const [mediaType, media] of Object.entries((response.content ?? {}) as Record<string, MediaTypeObject>)) {
            if (mediaExamples(media).length === 0) without.push(`${operationId ?? '?'} ${status} ${mediaType}`);
          }
        }
      }
      assert.deepEqual(without, []);
    });

    it('examples in schemas that match the schema they are in', () => {
      const wrong: string[] = [];
      for (const [where, schema] of documentSchemas(document)) {
        const examples = [...(Array.isArray(schema.examples) ? (schema.examples as unknown[]) : []), ...(schema.example === undefined ? [] : [schema.example])];
        if (examples.length === 0) continue;
        const validate = validatorFor(schema);
        for (const [index, example] of examples.entries()) {
          schemaExamplesChecked += 1;
          if (!validate(example)) wrong.push(`${where} example ${index}: ${describeErrors(validate.errors)}`);
        }
      }
      assert.deepEqual(wrong, []);
    });

    it('parameter and header examples that match their schemas', () => {
      const wrong: string[] = [];
      for (const [where, carrier] of carriersIn(document, '#')) {
        // Media types are the other test's; parameters and headers have `in` or no `content`.
        if (!('in' in carrier) && !/\/headers\/[^/]+$/.test(where)) continue;
        const examples = [...(carrier.example === undefined ? [] : [carrier.example]), ...Object.values(carrier.examples ?? {}).map((entry) => entry.value)];
        if (examples.length === 0 || !carrier.schema) continue;
        const validate = validatorFor(carrier.schema);
        for (const example of examples) if (!validate(example)) wrong.push(`${where}: ${JSON.stringify(example)} ${describeErrors(validate.errors)}`);
      }
      assert.deepEqual(wrong, []);
    });

    it('event streams with sample messages that match the message schema', () => {
      const wrong: string[] = [];
      for (const { operationId, operation } of operations) {
        for (const [status, response] of Object.entries(operation.responses)) {
          const media = (response.content as Record<string, MediaTypeObject> | undefined)?.['text/event-stream'];
          if (!media) continue;
          const where = `${operationId ?? '?'} ${status}`;
          const itemSchema = media['x-item-schema'];
          if (!itemSchema) {
            wrong.push(`${where} has no x-item-schema`);
            continue;
          }
          const validate = validatorFor(itemSchema);
          for (const sample of mediaExamples(media)) {
            if (typeof sample !== 'string') {
              wrong.push(`${where}: an example that is not text`);
              continue;
            }
            const messages = sseMessages(sample);
            if (messages.length === 0) wrong.push(`${where}: an example with no message`);
            for (const message of messages) {
              let data: unknown;
              try {
                data = JSON.parse(message.data);
              } catch {
                wrong.push(`${where}: message ${message.id ?? '?'} has data that is not JSON`);
                continue;
              }
              if (!validate({ ...message, data })) wrong.push(`${where}: message ${message.id ?? '?'}: ${describeErrors(validate.errors)}`);
              else if (isObject(data) && (data.id !== message.id || data.type !== message.event)) wrong.push(`${where}: message ${message.id ?? '?'} names another id or type than its data`);
            }
          }
        }
      }
      assert.deepEqual(wrong, []);
    });

    it('metrics samples in the Prometheus text format', () => {
      const wrong: string[] = [];
      let checked = 0;
      for (const { operationId, operation } of operations) {
        for (const [status, response] of Object.entries(operation.responses)) {
          for (const [mediaType, media] of Object.entries((response.content ?? {}) as Record<string, MediaTypeObject>)) {
            if (!mediaType.startsWith('text/plain; version=0.0.4')) continue;
            for (const sample of mediaExamples(media)) {
              checked += 1;
              const faults = typeof sample === 'string' ? prometheusTextFaults(sample) : ['not text'];
              wrong.push(...faults.map((fault) => `${operationId ?? '?'} ${status}: ${fault}`));
            }
          }
        }
      }
      assert.deepEqual(wrong, []);
      assert.ok(checked > 0, 'no metrics sample');
    });
  });
}

it('finds examples in the schemas at all', () => {
  assert.ok(schemaExamplesChecked > 0, 'no schema of any contract has an example: the search for them is broken');
});
