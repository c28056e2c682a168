import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ProblemError } from '@duplex/shared';
import { parseOperation } from '../../src/lib/operations.ts';
import { request } from '../helpers.ts';

const refusedWith = (code: string) => (error: unknown) => error instanceof ProblemError && error.code === code;

test('each kind gets exactly its parameters', () => {
  assert.deepEqual(parseOperation(request('volume.create', { name: 'v', size_bytes: 10 })), {
    kind: 'volume.create',
    name: 'v',
    size_bytes: 10,
  });
  assert.deepEqual(parseOperation(request('volume.copy', { name: 'v', target_name: 'w' })), {
    kind: 'volume.copy',
    name: 'v',
    target_device: 'd0',
    target_name: 'w',
  });
  assert.deepEqual(parseOperation(request('device.format')), { kind: 'device.format' });
});

test('a missing parameter is refused', () => {
  assert.throws(() => parseOperation(request('volume.create', { name: 'v' })), refusedWith('validation-failed'));
  assert.throws(() => parseOperation(request('volume.copy', { name: 'v' })), refusedWith('validation-failed'));
});

test('a parameter the kind does not take is refused', () => {
  assert.throws(() => parseOperation(request('volume.delete', { name: 'v', size_bytes: 1 })), refusedWith('validation-failed'));
  assert.throws(() => parseOperation(request('device.format', { name: 'v' })), refusedWith('validation-failed'));
});

test('names are checked, the copy target too', () => {
  assert.throws(() => parseOperation(request('volume.create', { name: '../x', size_bytes: 1 })), refusedWith('invalid-name'));
  assert.throws(() => parseOperation(request('volume.copy', { name: 'v', target_name: 'a/b' })), refusedWith('invalid-name'));
});

test('a task id that cannot name a record is refused', () => {
  assert.throws(() => parseOperation(request('device.probe', {}, { task_id: '../t' })), refusedWith('validation-failed'));
});
