/**
 * Failed authentications per address, counted in fixed windows: an address that reaches the
 * limit is refused until its window ends, which bounds how fast anyone can guess tokens.
 */
export class AuthFailures {
  private readonly windows = new Map<string, { startedAt: number; failures: number }>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whole seconds until `address` may try again; 0 when it may now. */
  blockedForSeconds(address: string): number {
    const window = this.current(address);
    if (!window || window.failures < this.limit) return 0;
    return Math.max(1, Math.ceil((window.startedAt + this.windowMs - this.now()) / 1000));
  }

  fail(address: string): void {
    const window = this.current(address);
    if (window) {
      window.failures += 1;
      return;
    }
    // Bounded: ended windows go first, and a flood of addresses cannot grow the map without end.
    if (this.windows.size >= 100_000) this.forgetEnded();
    if (this.windows.size >= 100_000) this.windows.clear();
    this.windows.set(address, { startedAt: this.now(), failures: 1 });
  }

  private current(address: string): { startedAt: number; failures: number } | undefined {
    const window = this.windows.get(address);
    if (window && this.now() - window.startedAt >= this.windowMs) {
      this.windows.delete(address);
      return undefined;
    }
    return window;
  }

  private forgetEnded(): void {
    const now = this.now();
    for (const [address, window] of this.windows) if (now - window.startedAt >= this.windowMs) this.windows.delete(address);
  }
}
