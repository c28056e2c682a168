import { Ajv, type Options, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';
import type { FastifySchemaCompiler, FastifySerializerCompiler } from 'fastify';

const common: Options = {
  // The contracts are checked against the JSON Schema meta-schema by the contract lint and the
  // contract tests; compiling the meta-schema again in every service cost each one about a
  // third of a second of its start.
  validateSchema: false,
  allErrors: false,
  useDefaults: true,
  removeAdditional: false,
  discriminator: true,
  strict: true,
  strictTypes: false,
  strictRequired: false,
};

function createAjv(options: Options): Ajv {
  const ajv = new Ajv({ ...common, ...options });
  addFormats.default(ajv);
  return ajv;
}

/**
 * Bodies are validated as sent: nothing is coerced or stripped, so a wrong type or an
 * unknown field is refused. Path, query and header values arrive as text and are converted
 * to the contract's types; a query parameter that may repeat (an array) may also be given once.
 */
export function createValidatorCompiler(): FastifySchemaCompiler<unknown> {
  const bodyAjv = createAjv({ coerceTypes: false });
  const textAjv = createAjv({ coerceTypes: 'array' });
  return ({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? bodyAjv : textAjv;
    return compiledAtFirstUse(() => ajv.compile(schema as object));
  };
}

/**
 * A route's validator is compiled when the route is first called, not when the service
 * starts: compiling every operation of a contract up front was a quarter of a service's
 * start-up CPU, mostly for operations a given process rarely or never serves. Fastify reads a
 * failed validation's `errors` from the function it was given, so they are copied there.
 */
function compiledAtFirstUse(compile: () => ValidateFunction): ValidateFunction {
  let compiled: ValidateFunction | undefined;
  const validate = ((data: unknown) => {
    compiled ??= compile();
    const valid = compiled(data);
    validate.errors = compiled.errors;
    return valid;
  }) as ValidateFunction;
  return validate;
}

/**
 * Fastify's own response serializers (fast-json-stringify), each built at its route's first
 * reply of that status rather than at start, for the same reason as the validators.
 */
export function createSerializerCompiler(): FastifySerializerCompiler<unknown> {
  const build = SerializerSelector()({}, {});
  return (route) => {
    let serialize: ((data: unknown) => string) | undefined;
    return (data) => {
      serialize ??= build(route as Parameters<typeof build>[0]);
      return serialize(data);
    };
  };
}
