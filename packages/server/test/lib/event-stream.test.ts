import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadResolvedContract } from '@duplex/contracts';
import { ProblemError } from '@duplex/shared';
import { parseSse } from '@duplex/testkit';
import {
  comparePositions,
  eventTypes,
  laterPosition,
  matchesFilter,
  parseTypeFilter,
  sseComment,
  sseMessage,
  sseRetry,
  toEventResource,
  type StreamedEvent,
} from '../../src/lib/event-stream.ts';

function streamed(overrides: Partial<StreamedEvent> = {}): StreamedEvent {
  return {
    id: 7,
    type: 'task.state_changed',
    storage_system_id: 'ss1',
    task_id: 'tsk_1',
    payload: { task_id: 'tsk_1', state: 'queued' },
    created_at: new Date('2026-11-25T10:00:00.123Z'),
    position: { xid: 100n, id: 7 },
    ...overrides,
  };
}

describe('stream positions', () => {
  it('order by stream_xid first, then by id', () => {
    assert.equal(comparePositions({ xid: 5n, id: 90 }, { xid: 6n, id: 1 }), -1);
    assert.equal(comparePositions({ xid: 6n, id: 1 }, { xid: 5n, id: 90 }), 1);
    assert.equal(comparePositions({ xid: 6n, id: 1 }, { xid: 6n, id: 2 }), -1);
    assert.equal(comparePositions({ xid: 6n, id: 2 }, { xid: 6n, id: 2 }), 0);
    // xid8 values are 64-bit: beyond what a number holds exactly.
    assert.equal(comparePositions({ xid: 2n ** 60n + 1n, id: 1 }, { xid: 2n ** 60n, id: 9 }), 1);
    assert.deepEqual(laterPosition({ xid: 5n, id: 9 }, { xid: 6n, id: 1 }), { xid: 6n, id: 1 });
    assert.deepEqual(laterPosition({ xid: 7n, id: 9 }, { xid: 6n, id: 1 }), { xid: 7n, id: 9 });
  });
});

describe('the type filter', () => {
  it('takes repeated values and comma lists', () => {
    assert.equal(parseTypeFilter(undefined), undefined);
    assert.equal(parseTypeFilter([]), undefined);
    assert.deepEqual(parseTypeFilter(['agent.lost']), new Set(['agent.lost']));
    assert.deepEqual(parseTypeFilter(['agent.lost,agent.registered', 'cluster.failover', 'agent.lost']), new Set(['agent.lost', 'agent.registered', 'cluster.failover']));
  });

  it('refuses a type that does not exist, naming it', () => {
    assert.throws(
      () => parseTypeFilter(['agent.lost,agent.exploded']),
      (error: unknown) => error instanceof ProblemError && error.code === 'validation-failed' && /agent\.exploded/.test(error.message) && error.errors?.[0]?.location === 'querystring/type',
    );
    assert.throws(() => parseTypeFilter(['agent.lost,']), ProblemError);
  });

  it('knows exactly the types the contract names', () => {
    const contract = loadResolvedContract('server').components?.schemas as Record<string, { enum: string[] }>;
    assert.deepEqual([...eventTypes].sort(), [...(contract.EventType?.enum ?? [])].sort());
  });
});

describe('matchesFilter', () => {
  it('matches on every field given, and on anything when none is', () => {
    const event = streamed();
    assert.equal(matchesFilter({}, event), true);
    assert.equal(matchesFilter({ types: new Set(['task.state_changed', 'agent.lost']) }, event), true);
    assert.equal(matchesFilter({ types: new Set(['agent.lost']) }, event), false);
    assert.equal(matchesFilter({ storageSystemId: 'ss1', taskId: 'tsk_1' }, event), true);
    assert.equal(matchesFilter({ storageSystemId: 'ss2' }, event), false);
    assert.equal(matchesFilter({ taskId: 'tsk_2' }, event), false);
    assert.equal(matchesFilter({ taskId: 'tsk_1' }, streamed({ task_id: null })), false);
  });
});

describe('Server-Sent Events framing', () => {
  it('writes one message per event: its id, its type and its resource as one line of JSON', () => {
    const resource = toEventResource(streamed({ payload: { note: 'two\nlines' } }));
    assert.deepEqual(resource, {
      id: '7',
      type: 'task.state_changed',
      storage_system_id: 'ss1',
      task_id: 'tsk_1',
      data: { note: 'two\nlines' },
      created_at: '2026-11-25T10:00:00.123Z',
    });
    const text = sseMessage(resource);
    assert.equal(text.split('\n').length, 5);
    assert.ok(text.endsWith('\n\n'));
    const parsed = parseSse(sseRetry(1000) + text + sseComment('heartbeat'));
    assert.equal(parsed.retry, 1000);
    assert.deepEqual(parsed.comments, ['heartbeat']);
    assert.equal(parsed.rest, '');
    assert.equal(parsed.messages.length, 1);
    assert.equal(parsed.messages[0]?.id, '7');
    assert.equal(parsed.messages[0]?.event, 'task.state_changed');
    assert.deepEqual(JSON.parse(parsed.messages[0]!.data), resource);
  });

  it('keeps every line of a comment a comment', () => {
    assert.equal(sseComment('closing: one\nand two'), ': closing: one\n: and two\n\n');
    assert.deepEqual(parseSse(sseComment('a\r\nb')).messages, []);
  });
});
