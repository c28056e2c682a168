import { Counter, Histogram, latencyBuckets, type Registry } from '@duplex/shared';

/** What a driver counts and times. */
export class DriverMetrics {
  private readonly executions: Counter<'kind' | 'outcome'>;
  private readonly duration: Histogram<'kind'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.executions = new Counter({
      name: 'duplex_driver_executions_total',
      help: 'Execution requests, by kind and outcome: succeeded, failed (a device-level failure) or refused (answered with a problem: stale fencing, an invalid request, unreachable devices). A replay counts under its recorded outcome.',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.duration = new Histogram({
      name: 'duplex_driver_execution_duration_seconds',
      help: 'Time to run an execution request, by kind.',
      labelNames: ['kind'],
      buckets: [...latencyBuckets],
      registers,
    });
  }

  /** One execution, from its start (performance.now()) to its outcome. */
  executed(kind: string, outcome: 'succeeded' | 'failed' | 'refused', startedAt: number): void {
    this.executions.labels(kind, outcome).inc();
    this.duration.labels(kind).observe((performance.now() - startedAt) / 1000);
  }
}
