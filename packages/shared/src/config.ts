import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';

/** One environment variable of a service's configuration, with its documented default. */
export interface ConfigVariable {
  type: 'string' | 'integer' | 'boolean';
  description: string;
  default?: string | number | boolean;
  enum?: readonly string[];
  minimum?: number;
  maximum?: number;
  pattern?: string;
  format?: 'uri';
  /** The process refuses to start without it. */
  required?: true;
}

export type ConfigSchema = Record<string, ConfigVariable>;

type ValueOf<V extends ConfigVariable> = V['type'] extends 'integer'
  ? number
  : V['type'] extends 'boolean'
    ? boolean
    : V['enum'] extends readonly (infer E)[]
      ? E
      : string;

export type ConfigOf<S extends ConfigSchema> = {
  [K in keyof S]: S[K] extends { default: unknown } | { required: true } ? ValueOf<S[K]> : ValueOf<S[K]> | undefined;
};

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** A secret an operator sets: 32 to 512 visible ASCII characters. */
export const secretPattern = '^[\\x21-\\x7E]{32,512}$';

/** The cluster's token: its cluster-manager, its driver and its agents hold it (and nothing else does). */
export const clusterTokenVariable = {
  type: 'string',
  required: true,
  pattern: secretPattern,
  description:
    "The cluster's token (32 to 512 visible ASCII characters): the cluster-manager, the driver and the agents of this cluster call each other with it, and a process of another cluster, which holds its own, is refused. Each cluster has its own; the cluster-manager passes it to the agents it launches.",
} as const satisfies ConfigVariable;

/** The control plane's token: the servers and the cluster-managers hold it. */
export const serviceTokenVariable = {
  type: 'string',
  required: true,
  pattern: secretPattern,
  description:
    "The control plane's token (32 to 512 visible ASCII characters), the same for every server and cluster-manager: servers call cluster-managers with it (device administration, failback, rescans), and so does a cluster-manager its peer. Agents and drivers never hold it.",
} as const satisfies ConfigVariable;

/** Declares a service's configuration; the object doubles as its documentation. */
export const defineConfig = <const S extends ConfigSchema>(schema: S): S => schema;

/**
 * Reads the variables a schema names from the environment, applies defaults, converts
 * types, and throws one ConfigError naming every bad or missing value.
 */
export function loadConfig<S extends ConfigSchema>(schema: S, env: Record<string, string | undefined> = process.env): ConfigOf<S> {
  // The schema is the service's own (checked by its tests), not input: compiling the JSON Schema
  // meta-schema to check it again would cost every start about a third of a second.
  const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: true, strict: true, validateSchema: false });
  addFormats.default(ajv);
  const properties: Record<string, object> = {};
  for (const [name, variable] of Object.entries(schema)) {
    const { description: _description, required: _required, ...rule } = variable;
    properties[name] = rule;
  }
  const required = Object.keys(schema).filter((name) => schema[name]?.required);
  const validate = ajv.compile({ type: 'object', properties, required });
  const values: Record<string, unknown> = {};
  for (const name of Object.keys(schema)) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') values[name] = raw;
  }
  if (!validate(values)) {
    const problems = (validate.errors ?? []).map((error) => {
      const name = error.instancePath.slice(1) || String(error.params.missingProperty ?? '');
      return `${name} ${error.message ?? 'is invalid'}`;
    });
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  return values as ConfigOf<S>;
}

/** Renders a schema as a Markdown table for the README's configuration reference. */
export function describeConfig(schema: ConfigSchema): string {
  const rows = Object.entries(schema).map(
    ([name, variable]) =>
      `| \`${name}\` | ${variable.required ? '(required)' : variable.default === undefined ? '(none)' : `\`${String(variable.default)}\``} | ${variable.description} |`,
  );
  return ['| variable | default | meaning |', '| --- | --- | --- |', ...rows].join('\n');
}
