import type { OpenApiDocument, OpenApiOperation } from '@duplex/contracts';

export const operationMethods = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const;

export interface DocumentedOperation {
  /** Upper case, as Fastify names methods. */
  method: string;
  /** The OpenAPI path template, such as `/v1/tasks/{id}:cancel`. */
  path: string;
  operationId: string | undefined;
  operation: OpenApiOperation;
}

/** Every operation of a document, whatever it is missing. */
export function operationsOf(document: OpenApiDocument): DocumentedOperation[] {
  const found: DocumentedOperation[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of operationMethods) {
      const operation = item[method];
      if (operation === undefined) continue;
      const operationId: unknown = operation.operationId;
      found.push({ method: method.toUpperCase(), path, operationId: typeof operationId === 'string' ? operationId : undefined, operation });
    }
  }
  return found;
}

/** The operations keyed by operationId; a document with a missing or repeated id is refused. */
export function operationIndex(document: OpenApiDocument): Map<string, DocumentedOperation> {
  const index = new Map<string, DocumentedOperation>();
  for (const documented of operationsOf(document)) {
    const { operationId, method, path } = documented;
    if (operationId === undefined) throw new Error(`${method} ${path} has no operationId`);
    if (index.has(operationId)) throw new Error(`operationId ${operationId} is used twice`);
    index.set(operationId, documented);
  }
  return index;
}

/** A concrete URL for a path template, each parameter filled with a value its schema allows. */
export function samplePath(documented: DocumentedOperation): string {
  return documented.path.replace(/\{([^}]+)\}/g, (_match, name: string) => {
    const parameter = documented.operation.parameters?.find((candidate) => candidate.in === 'path' && candidate.name === name);
    const examples = parameter?.schema.examples;
    const value = Array.isArray(examples) && typeof examples[0] === 'string' ? examples[0] : 'x1';
    return encodeURIComponent(value).replaceAll('%3A', ':');
  });
}
