import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { JsonSchema } from '@duplex/contracts';

// The API conventions say times are RFC 3339 in UTC, so in answers they must end in Z.
const utcTimestamp = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?Z$/;

/**
 * An Ajv for JSON Schema 2020-12 (the dialect of OpenAPI 3.1), as strict as the services'
 * own validator, with the standard formats. With `utcOnly`, a date-time must be in UTC.
 */
export function createSchemaValidator(options: { utcOnly: boolean }): Ajv2020 {
  const ajv = new Ajv2020({
    allErrors: true,
    strict: true,
    strictTypes: false,
    strictRequired: false,
    discriminator: true,
  });
  addFormats.default(ajv);
  if (options.utcOnly) {
    ajv.addFormat('date-time', { type: 'string', validate: (value: string) => utcTimestamp.test(value) && !Number.isNaN(Date.parse(value)) });
  }
  return ajv;
}

export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((error) => `${error.instancePath || '(root)'} ${error.message ?? error.keyword} ${JSON.stringify(error.params)}`).join('; ');
}

/** Compiles each schema once per validator. */
export class SchemaCache {
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(private readonly ajv: Ajv2020) {}

  get(key: string, schema: JsonSchema): ValidateFunction {
    let validate = this.compiled.get(key);
    if (!validate) {
      validate = this.ajv.compile(schema);
      this.compiled.set(key, validate);
    }
    return validate;
  }
}
