import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { secretHash } from '@duplex/shared';
import { createTestDatabase, waitFor, type TestDatabase } from '@duplex/testkit';
import { AgentRegistry } from '../../src/lib/agent-registry.ts';
import { insertToken } from '../../src/repositories/tokens.ts';
import { Authenticator } from '../../src/services/authenticator.ts';

const secret = 'dpx_authenticator-test-secret';
const header = `Bearer ${secret}`;

describe('Authenticator: looking tokens up', () => {
  let database: TestDatabase;
  /** Statements sent to Postgres that read api_tokens, since the last reset. */
  let tokenLookups = 0;

  before(async () => {
    database = await createTestDatabase();
    await insertToken(database.db, { id: 'tok_viewer', name: 'viewer', role: 'viewer', secret_sha256: secretHash(secret), created_by: null, expires_at: null });
    database.db.on('query', (query: { sql: string }) => {
      if (/from "api_tokens"/.test(query.sql)) tokenLookups += 1;
    });
  });
  after(() => database.drop());
  beforeEach(() => {
    tokenLookups = 0;
  });

  const authenticator = () => new Authenticator(database.db, new AgentRegistry(), new Map(), { cacheMs: 60_000, failureLimit: 100, failureWindowMs: 60_000 });

  it('answers a thousand requests that carry the same new token with one lookup', async () => {
    const auth = authenticator();
    const callers = await Promise.all(Array.from({ length: 1_000 }, (_, index) => auth.authorize(header, 'viewer', 'listTasks', `10.0.0.${index % 250}`)));
    assert.equal(tokenLookups, 1);
    assert.ok(callers.every((caller) => caller.id === 'tok_viewer' && caller.role === 'viewer'));
    // Remembered: a later request looks nothing up.
    await auth.authorize(header, 'viewer', 'listTasks', '10.0.0.1');
    assert.equal(tokenLookups, 1);
  });

  it('refuses every request of a burst with an unknown token, after one lookup', async () => {
    const auth = authenticator();
    const outcomes = await Promise.allSettled(Array.from({ length: 50 }, (_, index) => auth.authorize('Bearer dpx_unknown', 'viewer', 'listTasks', `10.0.1.${index}`)));
    assert.equal(tokenLookups, 1);
    assert.ok(outcomes.every((outcome) => outcome.status === 'rejected' && (outcome.reason as { code?: string }).code === 'unauthenticated'));
  });

  it('does not remember the answer of a lookup that was running when the checks were forgotten', async () => {
    const auth = authenticator();
    // Hold the lookup in Postgres: it waits for the table while a transaction locks it.
    const lock = await database.db.transaction();
    try {
      await lock.raw('lock table api_tokens in access exclusive mode');
      const running = auth.authorize(header, 'viewer', 'listTasks', '10.0.2.1');
      await waitFor('the lookup to wait for the table', async () => {
        const { rows } = await database.db.raw<{ rows: unknown[] }>(`select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like '%api_tokens%'`);
        return rows.length > 0 ? true : undefined;
      }, 5_000);
      // A revocation forgets the checks while this lookup runs: its answer may be the old one.
      auth.forget();
      await lock.commit();
      assert.equal((await running).id, 'tok_viewer');
    } finally {
      if (!lock.isCompleted()) await lock.rollback();
    }
    // The next request looks again rather than trusting an answer from before the forgetting.
    await auth.authorize(header, 'viewer', 'listTasks', '10.0.2.2');
    assert.equal(tokenLookups, 2);
  });
});
