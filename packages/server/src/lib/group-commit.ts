export interface GroupCommitOptions<Item> {
  /** The most items one commit takes. */
  maxBatch: number;
  /**
   * Items with the same key never share a commit, nor run in two commits at once: the later one
   * goes in a commit that starts after the first one's has ended, and sees what it committed.
   * Without it, any items may share a commit.
   */
  keyOf?: (item: Item) => string;
  /**
   * How many commits may run at once (default 1). More lets an item that arrives during a
   * commit start its own at once rather than wait for that one's end, and lets the queue carry
   * more than one commit's worth of items per round trip.
   */
  maxInFlight?: number;
  /**
   * How long a commit that could start with fewer than maxBatch items waits for more (default 0:
   * it starts at once). Fewer, larger commits cost less CPU per item, for up to this much more
   * latency per item.
   */
  gatherMs?: number;
}

/**
 * Group commit: items that arrive while a commit is under way (or maxInFlight of them) wait
 * for one to end and then commit together, in one round of statements. At low load each item
 * commits on its own at once (or after gatherMs, when set); under load one round trip and one
 * WAL flush serve many items instead of one each.
 * Every caller is answered only after its own item's commit, with that item's outcome; a
 * failed commit fails its own items only, and the next commit still runs.
 */
export class GroupCommitQueue<Item, Outcome> {
  private waiting: { item: Item; resolve: (outcome: Outcome) => void; reject: (error: unknown) => void }[] = [];
  private inFlight = 0;
  /** The keys of the items in the commits under way. */
  private readonly keysInFlight = new Set<string>();
  private readonly maxInFlight: number;
  /** While set, a commit is waiting gatherMs for more items before it starts. */
  private gathering: NodeJS.Timeout | undefined;

  constructor(
    private readonly commit: (items: Item[]) => Promise<Outcome[]>,
    private readonly options: GroupCommitOptions<Item>,
  ) {
    this.maxInFlight = options.maxInFlight ?? 1;
  }

  add(item: Item): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      this.startCommits();
    });
  }

  /**
   * Starts commits of what waits while fewer than maxInFlight run; each one's end starts the
   * next. With gatherMs, a commit that would start with less than a full batch waits that long
   * first (a full batch ends the wait).
   */
  private startCommits(): void {
    const { maxBatch, gatherMs } = this.options;
    if (this.gathering) {
      if (this.waiting.length < maxBatch) return;
      clearTimeout(this.gathering);
      this.gathering = undefined;
    } else if (gatherMs && this.inFlight < this.maxInFlight && this.waiting.length > 0 && this.waiting.length < maxBatch) {
      this.gathering = setTimeout(() => {
        this.gathering = undefined;
        this.commitWhatWaits();
      }, gatherMs);
      return;
    }
    this.commitWhatWaits();
  }

  private commitWhatWaits(): void {
    while (this.inFlight < this.maxInFlight && this.waiting.length > 0) {
      const batch = this.takeBatch();
      // Everything that waits has a key in a commit under way: its end starts the next.
      if (batch.length === 0) return;
      const keys = this.options.keyOf ? batch.map((entry) => this.options.keyOf!(entry.item)) : [];
      for (const key of keys) this.keysInFlight.add(key);
      this.inFlight += 1;
      void this.commitBatch(batch).finally(() => {
        for (const key of keys) this.keysInFlight.delete(key);
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

  /** The oldest waiting items, up to maxBatch, with no key twice and none in a commit under way. */
  private takeBatch(): typeof this.waiting {
    const { maxBatch, keyOf } = this.options;
    if (!keyOf) return this.waiting.splice(0, maxBatch);
    const batch: typeof this.waiting = [];
    const keys = new Set<string>();
    const rest: typeof this.waiting = [];
    for (const entry of this.waiting) {
      const key = keyOf(entry.item);
      if (batch.length < maxBatch && !keys.has(key) && !this.keysInFlight.has(key)) {
        keys.add(key);
        batch.push(entry);
      } else rest.push(entry);
    }
    this.waiting = rest;
    return batch;
  }
}
