import { Ajv, type Options } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

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
    return ajv.compile(schema as object);
  };
}
