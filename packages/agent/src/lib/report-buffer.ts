import type { ServerApi } from '@duplex/contracts';

export type TaskReport = ServerApi.components['schemas']['TaskReport'];

const isTerminal = (report: TaskReport): boolean => report.state !== 'running';

/**
 * Reports waiting to reach the server, one per task attempt. A terminal report replaces a
 * `running` one that has not been sent yet, so a fast task costs the server one update.
 */
export class ReportBuffer {
  private readonly pending = new Map<string, TaskReport>();

  get size(): number {
    return this.pending.size;
  }

  add(report: TaskReport): void {
    const current = this.pending.get(report.task_id);
    if (current && current.fencing_token === report.fencing_token && isTerminal(current) && !isTerminal(report)) return;
    this.pending.set(report.task_id, report);
  }

  take(limit: number): TaskReport[] {
    return [...this.pending.values()].slice(0, limit);
  }

  /** Forgets the sent reports, unless a newer report for the same task arrived meanwhile. */
  acknowledge(sent: TaskReport[]): void {
    for (const report of sent) {
      if (this.pending.get(report.task_id) === report) this.pending.delete(report.task_id);
    }
  }
}
