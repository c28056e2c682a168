import type { ServerApi } from '@duplex/contracts';

export type TaskReport = ServerApi.components['schemas']['TaskReport'];

const isTerminal = (report: TaskReport): boolean => report.state !== 'running';

interface Pending {
  report: TaskReport;
  /** When the report may be sent (epoch ms). */
  dueAt: number;
}

/**
 * Reports waiting to reach the server, one per task attempt. A terminal report replaces a
 * `running` one that has not been sent yet, and a `running` report is held `runningHoldMs`
 * before it is due: a task that ends within that time costs the server one update (one
 * history row, one event) instead of two, and a longer one still shows as running.
 */
export class ReportBuffer {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly runningHoldMs = 0) {}

  get size(): number {
    return this.pending.size;
  }

  add(report: TaskReport, now = Date.now()): void {
    const current = this.pending.get(report.task_id)?.report;
    if (current && current.fencing_token === report.fencing_token && isTerminal(current) && !isTerminal(report)) return;
    this.pending.set(report.task_id, { report, dueAt: isTerminal(report) ? now : now + this.runningHoldMs });
  }

  /** Up to `limit` reports that are due, oldest first. */
  take(limit: number, now = Date.now()): TaskReport[] {
    const due: TaskReport[] = [];
    for (const { report, dueAt } of this.pending.values()) {
      if (due.length >= limit) break;
      if (dueAt <= now) due.push(report);
    }
    return due;
  }

  /** When the next held report falls due, or undefined when none waits. */
  nextDueAt(): number | undefined {
    let next: number | undefined;
    for (const { dueAt } of this.pending.values()) if (next === undefined || dueAt < next) next = dueAt;
    return next;
  }

  /** Forgets the sent reports, unless a newer report for the same task arrived meanwhile. */
  acknowledge(sent: TaskReport[]): void {
    for (const report of sent) {
      if (this.pending.get(report.task_id)?.report === report) this.pending.delete(report.task_id);
    }
  }
}
