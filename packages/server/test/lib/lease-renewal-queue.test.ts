import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LeaseRenewalQueue, type LeaseRenewal, type RenewedLeases } from '../../src/lib/lease-renewal-queue.ts';

/** A statement the test ends by hand, renewing every agent it was given in incarnation 1. */
function heldStatements() {
  const calls: { renewals: LeaseRenewal[]; finish: () => void; fail: (error: Error) => void }[] = [];
  const renewMany = (renewals: LeaseRenewal[]) =>
    new Promise<RenewedLeases<string>>((resolve, reject) => {
      const renewed: RenewedLeases<string> = new Map(renewals.map((renewal) => [renewal.agentId, { incarnation: 1, renewed: `lease of ${renewal.agentId}` }]));
      calls.push({ renewals, finish: () => resolve(renewed), fail: reject });
    });
  return { calls, renewMany };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('LeaseRenewalQueue', () => {
  it('renews a lone heartbeat at once', async () => {
    const { calls, renewMany } = heldStatements();
    const queue = new LeaseRenewalQueue(renewMany, 10);
    const renewed = queue.renew({ agentId: 'a', incarnation: 1 });
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0]!.renewals, [{ agentId: 'a', incarnation: 1 }]);
    calls[0]!.finish();
    assert.equal(await renewed, 'lease of a');
  });

  it('renews the heartbeats that came during a statement together in the next, at most maxBatch in each', async () => {
    const { calls, renewMany } = heldStatements();
    const queue = new LeaseRenewalQueue(renewMany, 2);
    const answers = ['a', 'b', 'c', 'd'].map((agentId) => queue.renew({ agentId, incarnation: 1 }));
    assert.equal(calls.length, 1, 'one statement at a time');
    calls[0]!.finish();
    await settle();
    assert.deepEqual(calls.map((call) => call.renewals.map((renewal) => renewal.agentId)), [['a'], ['b', 'c']]);
    calls[1]!.finish();
    await settle();
    assert.deepEqual(calls[2]!.renewals.map((renewal) => renewal.agentId), ['d']);
    calls[2]!.finish();
    assert.deepEqual(await Promise.all(answers), ['lease of a', 'lease of b', 'lease of c', 'lease of d']);
  });

  it('answers undefined for an agent the statement did not renew, or renewed in another incarnation', async () => {
    const { calls, renewMany } = heldStatements();
    const queue = new LeaseRenewalQueue(async (renewals) => {
      const renewed = await renewMany(renewals);
      renewed.delete('gone');
      return renewed;
    }, 10);
    const first = queue.renew({ agentId: 'a', incarnation: 1 });
    const gone = queue.renew({ agentId: 'gone', incarnation: 1 });
    const older = queue.renew({ agentId: 'b', incarnation: 2 });
    calls[0]!.finish();
    await settle();
    calls[1]!.finish();
    assert.deepEqual(await Promise.all([first, gone, older]), ['lease of a', undefined, undefined]);
  });

  it('a failed statement fails its own heartbeats only, and the next statement still runs', async () => {
    const { calls, renewMany } = heldStatements();
    const queue = new LeaseRenewalQueue(renewMany, 10);
    const failed = queue.renew({ agentId: 'a', incarnation: 1 });
    const next = queue.renew({ agentId: 'b', incarnation: 1 });
    calls[0]!.fail(new Error('connection lost'));
    await assert.rejects(failed, /connection lost/);
    await settle();
    calls[1]!.finish();
    assert.equal(await next, 'lease of b');
    const later = queue.renew({ agentId: 'c', incarnation: 1 });
    assert.equal(calls.length, 3, 'an idle queue sends at once again');
    calls[2]!.finish();
    assert.equal(await later, 'lease of c');
  });
});
