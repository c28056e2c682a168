import type { JsonSchema, OpenApiDocument, OpenApiOperation } from '@duplex/contracts';
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  RouteGenericInterface,
} from 'fastify';

const httpMethods = ['get', 'put', 'post', 'delete', 'patch'] as const;

type JsonContent<T> = T extends { content: { 'application/json': infer B } } ? B : never;
type BodyOf<Op> = Op extends { requestBody: infer R } ? JsonContent<NonNullable<R>> : never;
type PartOf<Op, P extends string> = Op extends { parameters: infer Ps }
  ? Ps extends { [K in P]?: infer V }
    ? NonNullable<V>
    : never
  : never;

export interface OperationRoute<Op> extends RouteGenericInterface {
  Body: BodyOf<Op>;
  Querystring: PartOf<Op, 'query'>;
  Params: PartOf<Op, 'path'>;
  Headers: PartOf<Op, 'header'>;
}

export type OperationHandler<Op> = (
  request: FastifyRequest<OperationRoute<Op>>,
  reply: FastifyReply<OperationRoute<Op>>,
) => Promise<unknown>;

/** A handler for every operation of a contract, keyed by operationId. */
export type OperationHandlers<Ops> = { [K in keyof Ops]: OperationHandler<Ops[K]> };

export interface ContractRoute {
  method: string;
  url: string;
  operationId: string;
}

/**
 * `/v1/tasks/{id}` becomes `/v1/tasks/:id`. A parameter followed by literal text in the same
 * segment, as in `/v1/tasks/{id}:cancel`, is bounded by a pattern, and the literal colon is
 * doubled: `/v1/tasks/:id(^[^/:]+)::cancel`.
 */
export function toRouterPath(openApiPath: string): string {
  return openApiPath
    .replaceAll(':', '::')
    .replace(/\{([^}]+)\}(?=[^/])/g, ':$1(^[^/:]+)')
    .replace(/\{([^}]+)\}/g, ':$1');
}

export function contractRoutes(document: OpenApiDocument): ContractRoute[] {
  const routes: ContractRoute[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of httpMethods) {
      const operation = item[method];
      if (operation) routes.push({ method: method.toUpperCase(), url: toRouterPath(path), operationId: operation.operationId });
    }
  }
  return routes;
}

/**
 * Registers one route per operation of a resolved contract. Validation and serialization
 * schemas are taken from the contract itself; the handlers supply only behaviour. An
 * operation without a handler is an error at start, so every documented operation is served.
 */
export function mountContract(
  app: FastifyInstance,
  document: OpenApiDocument,
  handlers: Record<string, OperationHandler<never>>,
): void {
  const known = new Set<string>();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of httpMethods) {
      const operation = item[method];
      if (!operation) continue;
      const handler = handlers[operation.operationId];
      if (!handler) throw new Error(`no handler for operation ${operation.operationId}`);
      known.add(operation.operationId);
      app.route({
        method: method.toUpperCase() as Uppercase<(typeof httpMethods)[number]>,
        url: toRouterPath(path),
        schema: routeSchema(operation),
        // x-duplex-role: the least role a user's token must carry; x-duplex-caller: which
        // services may call, each with its own credential (one name or a list). Both are absent
        // on open operations.
        config: {
          operationId: operation.operationId,
          openApiPath: path,
          role: typeof operation['x-duplex-role'] === 'string' ? operation['x-duplex-role'] : undefined,
          callers: callersOf(operation['x-duplex-caller']),
        },
        handler: handler as never,
      });
    }
  }
  const extra = Object.keys(handlers).filter((operationId) => !known.has(operationId));
  if (extra.length > 0) throw new Error(`handlers for undocumented operations: ${extra.join(', ')}`);
}

/** The callers an operation names in x-duplex-caller: none, one, or a list. */
function callersOf(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

function routeSchema(operation: OpenApiOperation): Record<string, unknown> {
  const schema: Record<string, unknown> = {};
  const parameters = operation.parameters ?? [];
  const params = parametersSchema(parameters.filter((p) => p.in === 'path'), false, false);
  const query = parametersSchema(parameters.filter((p) => p.in === 'query'), false, true);
  const headers = parametersSchema(parameters.filter((p) => p.in === 'header'), true, false);
  if (params) schema.params = params;
  if (query) schema.querystring = query;
  if (headers) schema.headers = headers;
  const body = operation.requestBody?.content['application/json']?.schema;
  // A required body must be there: without a type, a missing or null body would pass.
  if (body) schema.body = operation.requestBody?.required && body.type === undefined ? { type: 'object', ...body } : body;
  const response: Record<string, unknown> = {};
  for (const [status, definition] of Object.entries(operation.responses)) {
    const content: Record<string, { schema: JsonSchema }> = {};
    for (const [mediaType, media] of Object.entries(definition.content ?? {})) {
      if (isStructured(media.schema)) content[mediaType] = { schema: media.schema };
    }
    if (Object.keys(content).length > 0) response[status] = { content };
  }
  schema.response = response;
  return schema;
}

function parametersSchema(
  parameters: OpenApiOperation['parameters'] & object,
  lowerCaseNames: boolean,
  closed: boolean,
): JsonSchema | undefined {
  if (parameters.length === 0) return closed ? { type: 'object', additionalProperties: false } : undefined;
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const parameter of parameters) {
    const name = lowerCaseNames ? parameter.name.toLowerCase() : parameter.name;
    properties[name] = parameter.schema;
    if (parameter.required) required.push(name);
  }
  const schema: JsonSchema = { type: 'object', properties, required };
  if (closed) schema.additionalProperties = false;
  return schema;
}

/** A free-form object (such as the OpenAPI document itself) is sent as it is. */
function isStructured(schema: JsonSchema): boolean {
  return !(schema.type === 'object' && schema.properties === undefined && schema.additionalProperties === undefined);
}
