import type { ConfigVariable } from './config.ts';
import { ProblemError } from './problem.ts';

/** The limit on failed authentications every service takes (spread into its configuration schema). */
export const authFailureVariables = {
  AUTH_FAILURE_LIMIT: {
    type: 'integer',
    minimum: 1,
    maximum: 100_000,
    default: 20,
    description: 'Failed authentications one address may have in AUTH_FAILURE_WINDOW_MS; past it, its calls that need a credential are answered 429 until the window ends.',
  },
  AUTH_FAILURE_WINDOW_MS: { type: 'integer', minimum: 1000, maximum: 3_600_000, default: 60_000, description: 'The window AUTH_FAILURE_LIMIT counts failed authentications in.' },
} as const satisfies Record<string, ConfigVariable>;

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

  /** Refuses (429, with the seconds to wait) an address that failed too often in its window. */
  refuseIfBlocked(address: string): void {
    const blockedFor = this.blockedForSeconds(address);
    if (blockedFor > 0) {
      throw new ProblemError('too-many-failures', `too many failed authentications from ${address}; try again in ${blockedFor} s`, { retryAfterSeconds: blockedFor });
    }
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
