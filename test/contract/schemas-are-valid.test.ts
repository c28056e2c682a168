import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentConfigSchema } from '@duplex/agent';
import { clusterManagerConfigSchema } from '@duplex/cluster-manager';
import { contractNames, loadResolvedContract } from '@duplex/contracts';
import { driverConfigSchema } from '@duplex/driver';
import { serverConfigSchema } from '@duplex/server';
import { Ajv } from 'ajv';

// The services compile their schemas without checking them against the JSON Schema
// meta-schema (it cost each start about a third of a second), so it is checked here.
const ajv = new Ajv({ strict: false });

describe('every schema the services compile is valid JSON Schema', () => {
  const configs = { server: serverConfigSchema, 'cluster-manager': clusterManagerConfigSchema, agent: agentConfigSchema, driver: driverConfigSchema };
  for (const [service, schema] of Object.entries(configs)) {
    it(`the ${service} configuration`, () => {
      for (const [name, variable] of Object.entries(schema)) {
        const { description: _description, required: _required, ...rule } = variable as Record<string, unknown>;
        assert.ok(ajv.validateSchema(rule), `${service} ${name}: ${ajv.errorsText(ajv.errors)}`);
      }
    });
  }

  for (const name of contractNames) {
    it(`the ${name} contract's component schemas`, () => {
      const schemas = (loadResolvedContract(name) as { components?: { schemas?: Record<string, object> } }).components?.schemas ?? {};
      assert.ok(Object.keys(schemas).length > 0);
      for (const [schemaName, schema] of Object.entries(schemas)) {
        assert.ok(ajv.validateSchema(schema), `${name} ${schemaName}: ${ajv.errorsText(ajv.errors)}`);
      }
    });
  }
});
