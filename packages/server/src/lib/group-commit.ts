export interface GroupCommitOptions<Item> {
  /** The most items one commit takes. */
  maxBatch: number;
  /**
   * Items with the same key never share a commit: the later one goes in the next, where it
   * sees what the first one committed. Without it, any items may share a commit.
   */
  keyOf?: (item: Item) => string;
  /**
   * How many commits may run at once (default 1). More lets the queue carry more than one
   * commit's worth of items per round trip; it must stay 1 when keys are given, since a later
   * commit has to see what an earlier one with the same key committed.
   */
  maxInFlight?: number;
}

/**
 * Group commit: items that arrive while a commit is under way (or maxInFlight of them) wait
 * for one to end and then commit together, in one round of statements. At low load each item commits on its own at
 * once; under load one round trip and one WAL flush serve many items instead of one each.
 * Every caller is answered only after its own item's commit, with that item's outcome; a
 * failed commit fails its own items only, and the next commit still runs.
 */
export class GroupCommitQueue<Item, Outcome> {
  private waiting: { item: Item; resolve: (outcome: Outcome) => void; reject: (error: unknown) => void }[] = [];
  private inFlight = 0;
  private readonly maxInFlight: number;

  constructor(
    private readonly commit: (items: Item[]) => Promise<Outcome[]>,
    private readonly options: GroupCommitOptions<Item>,
  ) {
    this.maxInFlight = options.maxInFlight ?? 1;
    if (options.keyOf && this.maxInFlight !== 1) throw new RangeError('a queue with keys commits one batch at a time');
  }

  add(item: Item): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      this.startCommits();
    });
  }

  /** Starts commits of what waits while fewer than maxInFlight run; each one's end starts the next. */
  private startCommits(): void {
    while (this.inFlight < this.maxInFlight && this.waiting.length > 0) {
      const batch = this.takeBatch();
      this.inFlight += 1;
      void this.commitBatch(batch).finally(() => {
        this.inFlight -= 1;
        this.startCommits();
      });
    }
  }

  private async commitBatch(batch: typeof this.waiting): Promise<void> {
    try {
      const outcomes = await this.commit(batch.map((entry) => entry.item));
      batch.forEach((entry, index) => entry.resolve(outcomes[index]!));
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    }
  }

  /** The oldest waiting items, up to maxBatch, with no key twice. */
  private takeBatch(): typeof this.waiting {
    const { maxBatch, keyOf } = this.options;
    if (!keyOf) return this.waiting.splice(0, maxBatch);
    const batch: typeof this.waiting = [];
    const keys = new Set<string>();
    const rest: typeof this.waiting = [];
    for (const entry of this.waiting) {
      const key = keyOf(entry.item);
      if (batch.length < maxBatch && !keys.has(key)) {
        keys.add(key);
        batch.push(entry);
      } else rest.push(entry);
    }
    this.waiting = rest;
    return batch;
  }
}
