import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig, tlsConfigVariables } from '@duplex/shared';
import { testClusterToken } from '@duplex/testkit';
import { backendOptionsFromConfig, driverConfigSchema } from '../../src/config.ts';

const required = { CLUSTER_TOKEN: testClusterToken() };

test('every variable has a description, and a documented default unless it is required or TLS (off when unset)', () => {
  for (const [name, variable] of Object.entries(driverConfigSchema)) {
    assert.ok(variable.description.length > 10, name);
    if (!('required' in variable) && !(name in tlsConfigVariables)) assert.notEqual((variable as { default?: unknown }).default, undefined, name);
  }
  assert.throws(() => loadConfig(driverConfigSchema, {}), /CLUSTER_TOKEN/);
});

test('defaults give the file backend on 127.0.0.1:7421', () => {
  const config = loadConfig(driverConfigSchema, required);
  assert.equal(config.DRIVER_HOST, '127.0.0.1');
  assert.equal(config.DRIVER_PORT, 7421);
  assert.deepEqual(backendOptionsFromConfig(config), { kind: 'file', deviceRoot: '.duplex/devices/ss1' });
});

test('the memory backend reads its devices and faults', () => {
  const config = loadConfig(driverConfigSchema, {
    ...required,
    DRIVER_BACKEND: 'memory',
    DRIVER_MEMORY_DEVICES: 'd0:c0:100,d1:c1:200',
    DRIVER_FAULT_LATENCY_MS: '5',
    DRIVER_FAULT_FAILURE_RATE: '0.25',
  });
  assert.deepEqual(backendOptionsFromConfig(config), {
    kind: 'memory',
    devices: [
      { id: 'd0', home_cluster: 'c0', capacity_bytes: 100 },
      { id: 'd1', home_cluster: 'c1', capacity_bytes: 200 },
    ],
    faults: { latencyMs: 5, failureRate: 0.25 },
  });
});

test('bad values are one ConfigError naming them', () => {
  assert.throws(() => loadConfig(driverConfigSchema, { ...required, DRIVER_BACKEND: 'lvm' }), (error: unknown) => error instanceof ConfigError && /DRIVER_BACKEND/.test(error.message));
  assert.throws(() => loadConfig(driverConfigSchema, { ...required, DRIVER_FAULT_FAILURE_RATE: '1.5' }), /DRIVER_FAULT_FAILURE_RATE/);
  assert.throws(() => loadConfig(driverConfigSchema, { ...required, DRIVER_PORT: 'x' }), /DRIVER_PORT/);
  const duplicate = loadConfig(driverConfigSchema, { ...required, DRIVER_BACKEND: 'memory', DRIVER_MEMORY_DEVICES: 'd0:c0:1,d0:c0:2' });
  assert.throws(() => backendOptionsFromConfig(duplicate), (error: unknown) => error instanceof ConfigError && /listed twice/.test(error.message));
});
