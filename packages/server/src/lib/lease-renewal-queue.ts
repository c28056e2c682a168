/** A heartbeat's request to renew its agent's lease. */
export interface LeaseRenewal {
  agentId: string;
  incarnation: number;
}

/** What the statement renewed, per agent: the incarnation it renewed and what the heartbeat answers. */
export type RenewedLeases<Renewed> = Map<string, { incarnation: number; renewed: Renewed }>;

/**
 * Renews agents' leases in groups. A heartbeat that arrives while a renewal statement is under
 * way waits for it to end and then goes with the others that came meanwhile, in one statement:
 * at low load each heartbeat is renewed at once, and under load one round trip and one commit
 * serve many heartbeats instead of one each. A heartbeat waits at most for one statement
 * before its own.
 *
 * A heartbeat the statement did not renew (an agent marked lost, an old incarnation, an agent
 * of another server) is answered undefined; the caller takes it from there.
 */
export class LeaseRenewalQueue<Renewed> {
  private waiting: { renewal: LeaseRenewal; resolve: (renewed: Renewed | undefined) => void; reject: (error: unknown) => void }[] = [];
  private renewing = false;

  constructor(
    private readonly renewMany: (renewals: LeaseRenewal[]) => Promise<RenewedLeases<Renewed>>,
    private readonly maxBatch: number,
  ) {}

  renew(renewal: LeaseRenewal): Promise<Renewed | undefined> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ renewal, resolve, reject });
      if (!this.renewing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.renewing = true;
    try {
      while (this.waiting.length > 0) {
        const batch = this.waiting.splice(0, this.maxBatch);
        try {
          const renewed = await this.renewMany(batch.map((entry) => entry.renewal));
          for (const { renewal, resolve } of batch) {
            const found = renewed.get(renewal.agentId);
            resolve(found?.incarnation === renewal.incarnation ? found.renewed : undefined);
          }
        } catch (error) {
          for (const entry of batch) entry.reject(error);
        }
      }
    } finally {
      this.renewing = false;
    }
  }
}
