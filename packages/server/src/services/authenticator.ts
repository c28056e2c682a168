import { AuthFailures, bearerToken, ProblemError, sameSecret, secretHash, type Database } from '@duplex/shared';
import { joinTokenFor } from '../lib/agent-credentials.ts';
import type { AgentRegistry } from '../lib/agent-registry.ts';
import { allows, type Role } from '../lib/tokens.ts';
import { findUsableToken, type TokenRow } from '../repositories/tokens.ts';

/** The caller a request's token names. */
export type Caller = Pick<TokenRow, 'id' | 'name' | 'role'>;

/**
 * Checks users' bearer tokens against the stored hashes. A check (found or not) is reused for
 * `cacheMs`, so a busy client costs one lookup per token per interval rather than one per
 * request; revocations and expiries therefore take effect within that time. Requests that
 * carry the same token while its lookup runs wait for that lookup: a client that opens a
 * thousand requests at once (after a start, or when the check expires) costs one lookup, not a
 * thousand queued for the pool's connections ahead of the lease renewals.
 */
export class Authenticator {
  private readonly checks = new Map<string, { caller: Caller | undefined; until: number }>();
  /** The lookups running, by hash. */
  private readonly lookups = new Map<string, Promise<Caller | undefined>>();
  /** Counts forget() calls: a lookup that began before one is answered but not remembered. */
  private generation = 0;
  private readonly failures: AuthFailures;
  private readonly cacheMs: number;

  constructor(
    private readonly db: Database,
    private readonly agents: AgentRegistry,
    private readonly joinTokens: ReadonlyMap<string, string>,
    options: { cacheMs: number; failureLimit: number; failureWindowMs: number },
  ) {
    this.cacheMs = options.cacheMs;
    this.failures = new AuthFailures(options.failureLimit, options.failureWindowMs);
  }

  /** An agent's registration must carry its storage system's join token (401 otherwise, counted). */
  admitJoining(header: string | string[] | undefined, storageSystemId: string, address: string): void {
    this.failures.refuseIfBlocked(address);
    const given = bearerToken(header);
    const expected = joinTokenFor(this.joinTokens, storageSystemId);
    if (given !== undefined && sameSecret(given, expected)) return;
    this.failures.fail(address);
    if (expected === undefined) throw new ProblemError('unauthenticated', `this server has no join token for storage system '${storageSystemId}' (JOIN_TOKENS)`);
    throw new ProblemError('unauthenticated', given === undefined ? 'a registration carries its storage system\'s join token as a bearer token' : 'the join token is wrong');
  }

  /**
   * A request of agent `agentId` must carry that agent's credential: 401 without a known one
   * (counted), 403 with another agent's.
   */
  authorizeAgent(header: string | string[] | undefined, agentId: string, address: string): void {
    this.failures.refuseIfBlocked(address);
    const secret = bearerToken(header);
    const check = secret === undefined ? 'unknown' : this.agents.checkCredential(agentId, secretHash(secret));
    if (check === 'agent') return this.agents.notePresented(agentId, secret!);
    if (check === 'other-agent') throw new ProblemError('forbidden', `the credential belongs to another agent, not to agent '${agentId}'`);
    this.failures.fail(address);
    throw new ProblemError('unauthenticated', secret === undefined ? 'an agent\'s request carries its credential as a bearer token' : `agent '${agentId}' holds no such credential, or it expired: register again`);
  }

  /**
   * The caller, if its token may call an operation that needs `role`; a ProblemError otherwise:
   * 401 (no usable token, counted against the address), 403 (the role is too low), or 429 (the
   * address failed too often lately; the token is then not even looked up).
   */
  async authorize(header: string | string[] | undefined, role: Role, operationId: string, address: string): Promise<Caller> {
    this.failures.refuseIfBlocked(address);
    const secret = bearerToken(header);
    if (secret === undefined) {
      this.failures.fail(address);
      throw new ProblemError('unauthenticated', header === undefined ? 'the request carries no bearer token' : 'the Authorization header is not `Bearer <token>`');
    }
    const caller = await this.lookup(secretHash(secret));
    if (!caller) {
      this.failures.fail(address);
      throw new ProblemError('unauthenticated', 'the token is unknown, revoked or expired');
    }
    if (!allows(caller.role, role)) throw new ProblemError('forbidden', `${operationId} needs the ${role} role; token ${caller.id} is ${caller.role}`);
    return caller;
  }

  /**
   * Forgets every remembered check: a revocation on this server takes effect here at once, for
   * the lookups running too (their answers are not remembered, and later requests look again).
   */
  forget(): void {
    this.checks.clear();
    this.lookups.clear();
    this.generation += 1;
  }

  private lookup(hash: string): Promise<Caller | undefined> {
    const remembered = this.checks.get(hash);
    if (remembered && remembered.until > Date.now()) return Promise.resolve(remembered.caller);
    const running = this.lookups.get(hash);
    if (running) return running;
    const started = this.findCaller(hash).finally(() => {
      // Unless forget() let a newer lookup take its place.
      if (this.lookups.get(hash) === started) this.lookups.delete(hash);
    });
    this.lookups.set(hash, started);
    return started;
  }

  /** Looks the token up, and remembers the answer unless forget() was called meanwhile. */
  private async findCaller(hash: string): Promise<Caller | undefined> {
    const generation = this.generation;
    const now = Date.now();
    const row = await findUsableToken(this.db, hash);
    const caller = row && { id: row.id, name: row.name, role: row.role };
    if (this.cacheMs > 0 && generation === this.generation) {
      // Bounded: unknown tokens are remembered too, so that a flood of made-up ones cannot grow the map without end.
      if (this.checks.size >= 10_000) this.checks.clear();
      this.checks.set(hash, { caller, until: now + this.cacheMs });
    }
    return caller;
  }
}
