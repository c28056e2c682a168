/**
 * Runs jobs one at a time per key (a device), in arrival order; different keys run in
 * parallel. The driver serializes per device too; ordering here keeps a server's tasks for
 * one device in the order it dispatched them.
 */
export class KeyedSerialQueue {
  private readonly tails = new Map<string, Promise<void>>();
  private pending = 0;

  get size(): number {
    return this.pending;
  }

  push(key: string, job: () => Promise<void>): void {
    this.pending += 1;
    const previous = this.tails.get(key) ?? Promise.resolve();
    const next = previous.then(job).catch(() => undefined).finally(() => {
      this.pending -= 1;
      if (this.tails.get(key) === next) this.tails.delete(key);
    });
    this.tails.set(key, next);
  }

  async drained(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }
}
