/**
 * Fencing rules. The epoch fences clusters: a device records the newest owner epoch it has
 * seen, and an older one is refused, which is how a cluster taking over a device shuts out
 * the one it replaced. The token fences attempts of one task: once a task is recorded, an
 * older attempt is refused and a current or newer one gets the recorded outcome.
 */

export type EpochCheck = 'stale' | 'current' | 'newer';

export function checkEpoch(requested: number, recorded: number): EpochCheck {
  if (requested < recorded) return 'stale';
  return requested > recorded ? 'newer' : 'current';
}

export type TaskCheck = 'replay' | 'stale';

/** For a task already recorded: replay its outcome, or refuse an older attempt. */
export function checkTask(recordedToken: number, requestedToken: number): TaskCheck {
  return requestedToken < recordedToken ? 'stale' : 'replay';
}
