import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AgentRegistry, type RegisteredAgent } from '../../src/lib/agent-registry.ts';

const now = 1_000_000;

function agent(id: string, overrides: Partial<Omit<RegisteredAgent, 'unreachableUntil'>> = {}): Omit<RegisteredAgent, 'unreachableUntil'> {
  return { id, storage_system_id: 'ss1', cluster_id: 'c0', url: `http://127.0.0.1:1/${id}`, incarnation: 1, leaseExpiresAt: now + 3000, credentials: [], dispatchCredential: `dpa_${id}`, ...overrides };
}

describe('AgentRegistry.routeFor', () => {
  it('returns the live agent of the cluster', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('A:ss1:c1:x', { cluster_id: 'c1' }));
    registry.upsert(agent('A:ss2:c0:x', { storage_system_id: 'ss2' }));
    registry.upsert(agent('A:ss1:c0:x'));
    assert.equal(registry.routeFor('ss1', 'c0', now)?.id, 'A:ss1:c0:x');
    assert.equal(registry.routeFor('ss1', 'c1', now)?.id, 'A:ss1:c1:x');
    assert.equal(registry.routeFor('ss2', 'c0', now)?.id, 'A:ss2:c0:x');
    assert.equal(registry.routeFor('ss2', 'c1', now), undefined);
  });

  it('skips an agent whose lease expired, the moment it expires', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('a', { leaseExpiresAt: now }));
    assert.equal(registry.routeFor('ss1', 'c0', now), undefined);
    assert.equal(registry.routeFor('ss1', 'c0', now - 1)?.id, 'a');
  });

  it('skips an unreachable agent until its time is up', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('a'));
    registry.markUnreachable('a', now + 500);
    assert.equal(registry.routeFor('ss1', 'c0', now), undefined);
    assert.equal(registry.routeFor('ss1', 'c0', now + 499), undefined);
    assert.equal(registry.routeFor('ss1', 'c0', now + 500)?.id, 'a');
  });

  it('falls back to another live agent of the cluster when one is expired or unreachable', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('expired', { leaseExpiresAt: now - 1 }));
    registry.upsert(agent('unreachable'));
    registry.markUnreachable('unreachable', now + 1000);
    registry.upsert(agent('live'));
    assert.equal(registry.routeFor('ss1', 'c0', now)?.id, 'live');
  });

  it('renew extends the lease so an expired agent is routed again', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('a', { leaseExpiresAt: now - 1 }));
    assert.equal(registry.routeFor('ss1', 'c0', now), undefined);
    registry.renew('a', now + 1000);
    assert.equal(registry.get('a')?.leaseExpiresAt, now + 1000);
    assert.equal(registry.routeFor('ss1', 'c0', now)?.id, 'a');
  });

  it('registering again clears the unreachable mark and replaces the url and incarnation', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('a'));
    registry.markUnreachable('a', now + 10_000);
    registry.upsert(agent('a', { url: 'http://127.0.0.1:2', incarnation: 2 }));
    assert.deepEqual(registry.get('a'), { ...agent('a', { url: 'http://127.0.0.1:2', incarnation: 2 }), unreachableUntil: 0 });
    assert.equal(registry.routeFor('ss1', 'c0', now)?.incarnation, 2);
  });

  it('routes to the first live agent of the cluster in registration order; registering again keeps its place', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('first'));
    registry.upsert(agent('other cluster', { cluster_id: 'c1' }));
    registry.upsert(agent('second'));
    registry.upsert(agent('first', { incarnation: 2 }));
    assert.deepEqual(registry.inCluster('ss1', 'c0').map((a) => `${a.id}#${a.incarnation}`), ['first#2', 'second#1']);
    assert.deepEqual(registry.inCluster('ss1', 'c1').map((a) => a.id), ['other cluster']);
    assert.deepEqual(registry.inCluster('ss9', 'c0'), []);
    assert.equal(registry.routeFor('ss1', 'c0', now)?.id, 'first');
    registry.markUnreachable('first', now + 1000);
    assert.equal(registry.routeFor('ss1', 'c0', now)?.id, 'second');
  });

  it('an agent registered again in another cluster leaves the first one', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('moved'));
    registry.upsert(agent('moved', { cluster_id: 'c1' }));
    assert.deepEqual(registry.inCluster('ss1', 'c0'), []);
    assert.equal(registry.routeFor('ss1', 'c0', now), undefined);
    assert.equal(registry.routeFor('ss1', 'c1', now)?.id, 'moved');
  });

  it('routes to an agent only once it holds a credential to call it with, which registering again keeps', () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('a', { dispatchCredential: undefined }));
    assert.equal(registry.routeFor('ss1', 'c0', now), undefined, 'a server that restarted knows no credential before the first heartbeat');
    registry.notePresented('a', 'dpa_presented');
    assert.equal(registry.routeFor('ss1', 'c0', now)?.dispatchCredential, 'dpa_presented');
    registry.upsert(agent('a', { dispatchCredential: undefined, incarnation: 2 }));
    assert.equal(registry.routeFor('ss1', 'c0', now)?.dispatchCredential, 'dpa_presented');
  });

  it('renew and markUnreachable of an unknown agent change nothing', () => {
    const registry = new AgentRegistry();
    registry.renew('ghost', now + 1000);
    registry.markUnreachable('ghost', now + 1000);
    assert.equal(registry.get('ghost'), undefined);
    assert.equal(registry.routeFor('ss1', 'c0', now), undefined);
  });
});

describe('AgentRegistry.checkCredential', () => {
  const credential = (sha256Digit: string, expiresAt: number) => ({ sha256: sha256Digit.repeat(64), expiresAt });

  it("knows an agent's own unexpired credentials, another agent's, and strangers", () => {
    const registry = new AgentRegistry();
    registry.upsert(agent('A:ss1:c0:x', { credentials: [credential('a', now + 1000), credential('b', now + 10)] }));
    registry.upsert(agent('A:ss1:c0:y', { credentials: [credential('c', now + 1000)] }));
    assert.equal(registry.checkCredential('A:ss1:c0:x', 'a'.repeat(64), now), 'agent');
    assert.equal(registry.checkCredential('A:ss1:c0:x', 'b'.repeat(64), now), 'agent', 'the previous credential until it expires');
    assert.equal(registry.checkCredential('A:ss1:c0:x', 'b'.repeat(64), now + 10), 'unknown', 'expired');
    assert.equal(registry.checkCredential('A:ss1:c0:x', 'c'.repeat(64), now), 'other-agent');
    assert.equal(registry.checkCredential('A:ss1:c0:x', 'd'.repeat(64), now), 'unknown');
    assert.equal(registry.checkCredential('A:ss1:c0:nobody', 'a'.repeat(64), now), 'other-agent');
    // Registering again without new credentials keeps them; new ones replace them.
    registry.upsert(agent('A:ss1:c0:x', { incarnation: 2, credentials: undefined as never }));
    assert.equal(registry.checkCredential('A:ss1:c0:x', 'a'.repeat(64), now), 'agent');
    registry.setCredentials('A:ss1:c0:x', [credential('e', now + 1000)]);
    assert.equal(registry.checkCredential('A:ss1:c0:x', 'a'.repeat(64), now), 'unknown');
  });
});
