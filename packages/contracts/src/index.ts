import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export type * as ServerApi from './generated/server.ts';
export type * as AgentApi from './generated/agent.ts';
export type * as ClusterManagerApi from './generated/cluster-manager.ts';
export type * as DriverApi from './generated/driver.ts';

export const contractNames = ['server', 'agent', 'cluster-manager', 'driver'] as const;
export type ContractName = (typeof contractNames)[number];

export interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, OpenApiOperation>>;
  components?: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
}

export interface OpenApiOperation {
  operationId: string;
  summary?: string;
  parameters?: OpenApiParameter[];
  requestBody?: { required?: boolean; content: Record<string, { schema: JsonSchema }> };
  responses: Record<string, { description: string; content?: Record<string, { schema: JsonSchema }> }>;
  [key: string]: unknown;
}

export interface OpenApiParameter {
  name: string;
  in: 'path' | 'query' | 'header' | 'cookie';
  required?: boolean;
  description?: string;
  schema: JsonSchema;
}

export type JsonSchema = Record<string, unknown>;

export const contractPath = (name: ContractName): string =>
  fileURLToPath(new URL(`../../../openapi/${name}.yaml`, import.meta.url));

declare global {
  interface ImportMeta {
    /**
     * In a service bundle, the contracts as JSON text (an object by name), put there by `npm run
     * build` (packages/cli/src/build.ts): parsing the YAML took a server about a second of its start.
     */
    bundledContracts?: string;
  }
}

const rawCache = new Map<ContractName, OpenApiDocument>();
const resolvedCache = new Map<ContractName, OpenApiDocument>();

/** The contract as written, for serving at /openapi.json and in Swagger UI. */
export function loadContract(name: ContractName): OpenApiDocument {
  let document = rawCache.get(name);
  if (!document) {
    const bundled = import.meta.bundledContracts;
    document = bundled === undefined ? (parse(readFileSync(contractPath(name), 'utf8')) as OpenApiDocument) : (JSON.parse(bundled) as Record<ContractName, OpenApiDocument>)[name];
    rawCache.set(name, document);
  }
  return document;
}

/**
 * The contract with every local `$ref` replaced by its target, so that each operation's
 * schemas stand alone for the validator and the serializer.
 */
export function loadResolvedContract(name: ContractName): OpenApiDocument {
  let document = resolvedCache.get(name);
  if (!document) {
    const raw = loadContract(name);
    document = resolveRefs(raw, raw, []) as OpenApiDocument;
    resolvedCache.set(name, document);
  }
  return document;
}

function resolveRefs(node: unknown, root: unknown, seen: string[]): unknown {
  if (Array.isArray(node)) return node.map((item) => resolveRefs(item, root, seen));
  if (node === null || typeof node !== 'object') return node;
  const record = node as Record<string, unknown>;
  const ref = record.$ref;
  if (typeof ref === 'string') {
    if (seen.includes(ref)) throw new Error(`recursive $ref ${ref} is not supported`);
    const { $ref: _ref, ...siblings } = record;
    const target = resolveRefs(lookupPointer(root, ref), root, [...seen, ref]);
    return { ...(target as Record<string, unknown>), ...(resolveRefs(siblings, root, seen) as object) };
  }
  const copy: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) {
    // The validator selects the branch by the discriminator's property alone and refuses `mapping`.
    copy[key] = key === 'discriminator' ? withoutMapping(value) : resolveRefs(value, root, seen);
  }
  return copy;
}

function withoutMapping(discriminator: unknown): unknown {
  const { mapping: _mapping, ...rest } = discriminator as Record<string, unknown>;
  return rest;
}

function lookupPointer(root: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`only local $refs are supported, got ${ref}`);
  let current = root;
  for (const segment of ref.slice(2).split('/')) {
    const key = segment.replaceAll('~1', '/').replaceAll('~0', '~');
    current = (current as Record<string, unknown> | undefined)?.[key];
    if (current === undefined) throw new Error(`$ref ${ref} points at nothing`);
  }
  return current;
}
