/**
 * Mutual exclusion per key (a device). Work on one device runs one piece at a time, in arrival
 * order; work on other devices is not held up. Work that needs several devices (a copy)
 * takes them in sorted order, so two such pieces can never wait on each other.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(deviceIds: readonly string[], work: () => Promise<T>): Promise<T> {
    const releases: (() => void)[] = [];
    try {
      for (const id of [...new Set(deviceIds)].sort()) releases.push(await this.acquire(id));
      return await work();
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  /** How many devices have work queued or running (for tests and metrics). */
  get busyDevices(): number {
    return this.tails.size;
  }

  private async acquire(id: string): Promise<() => void> {
    const previous = this.tails.get(id) ?? Promise.resolve();
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => held);
    this.tails.set(id, tail);
    await previous;
    return () => {
      release();
      if (this.tails.get(id) === tail) this.tails.delete(id);
    };
  }
}
