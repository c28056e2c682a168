import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { agentConfigSchema } from '@duplex/agent';
import { clusterManagerConfigSchema } from '@duplex/cluster-manager';
import { driverConfigSchema } from '@duplex/driver';
import { serverConfigSchema } from '@duplex/server';
import { describeConfig } from '@duplex/shared';
import { repositoryRoot } from '@duplex/testkit';

const readme = readFileSync(`${repositoryRoot}README.md`, 'utf8');

describe('README', () => {
  const schemas = { server: serverConfigSchema, 'cluster-manager': clusterManagerConfigSchema, agent: agentConfigSchema, driver: driverConfigSchema };
  for (const [service, schema] of Object.entries(schemas)) {
    it(`documents the configuration of the ${service} exactly as its schema says`, () => {
      assert.ok(readme.includes(`#### ${service}\n\n${describeConfig(schema)}\n`), `regenerate the ${service} table with describeConfig`);
    });
  }

  it('gives the run and test commands that CI uses', () => {
    const ci = readFileSync(`${repositoryRoot}.ci/run`, 'utf8');
    const testCommand = 'npx --yes pnpm@12.4.2 install && npm test';
    assert.ok(readme.includes(testCommand));
    assert.ok(ci.includes(testCommand));
    assert.ok(readme.includes('npx --yes pnpm@12.4.2 install && npm start'));
  });
});
