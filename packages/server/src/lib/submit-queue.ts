/**
 * Group commit for submissions. Single submissions that arrive while a commit is under way
 * wait for it to end and then commit together, in one transaction: at low load each request
 * commits on its own at once; under load, one round of statements and one WAL flush serve
 * many requests instead of one each. Every request is still answered only after its task is
 * committed.
 *
 * Two requests with the same idempotency key never share a commit: the later one goes in the
 * next, where it finds the first one's task and is answered as a replay of it.
 */
export class SubmitQueue<Item extends { idempotencyKey: string }, Outcome> {
  private waiting: { item: Item; resolve: (outcome: Outcome) => void; reject: (error: unknown) => void }[] = [];
  private committing = false;

  constructor(
    private readonly commit: (items: Item[]) => Promise<Outcome[]>,
    private readonly maxBatch: number,
  ) {}

  submit(item: Item): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      if (!this.committing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.committing = true;
    try {
      while (this.waiting.length > 0) {
        const batch = this.takeBatch();
        try {
          const outcomes = await this.commit(batch.map((entry) => entry.item));
          batch.forEach((entry, index) => entry.resolve(outcomes[index]!));
        } catch (error) {
          for (const entry of batch) entry.reject(error);
        }
      }
    } finally {
      this.committing = false;
    }
  }

  /** The oldest waiting submissions, up to maxBatch, with no idempotency key twice. */
  private takeBatch(): typeof this.waiting {
    const batch: typeof this.waiting = [];
    const keys = new Set<string>();
    const rest: typeof this.waiting = [];
    for (const entry of this.waiting) {
      if (batch.length < this.maxBatch && !keys.has(entry.item.idempotencyKey)) {
        keys.add(entry.item.idempotencyKey);
        batch.push(entry);
      } else rest.push(entry);
    }
    this.waiting = rest;
    return batch;
  }
}
