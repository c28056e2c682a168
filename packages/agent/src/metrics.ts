import { Counter, Histogram, latencyBuckets, type Registry } from '@duplex/shared';

export type TaskRunOutcome = 'succeeded' | 'failed' | 'refused';
export type HeartbeatOutcome = 'renewed' | 'refused' | 'failed';

/** What an agent counts and times; label children are made once, so recording allocates nothing. */
export class AgentMetrics {
  private readonly tasks: Counter<'kind' | 'outcome'>;
  private readonly heartbeats: Record<HeartbeatOutcome, Counter.Internal>;
  private readonly driverCalls: Record<'2xx' | '4xx' | '5xx' | 'unreachable', Histogram.Internal<'result'>>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.tasks = new Counter({
      name: 'duplex_agent_tasks_total',
      help: 'Attempts this agent ran through the driver, by kind and outcome (refused: the driver fenced the attempt off).',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    const heartbeats = new Counter({
      name: 'duplex_agent_heartbeats_sent_total',
      help: "Heartbeats sent to the agent's server, by outcome: renewed, refused (the server no longer knows the registration) or failed (no answer).",
      labelNames: ['outcome'],
      registers,
    });
    this.heartbeats = { renewed: heartbeats.labels('renewed'), refused: heartbeats.labels('refused'), failed: heartbeats.labels('failed') };
    const driverCalls = new Histogram({
      name: 'duplex_agent_driver_call_duration_seconds',
      help: 'Time of each execution call to the driver, by result: the status class, or unreachable.',
      labelNames: ['result'],
      buckets: [...latencyBuckets],
      registers,
    });
    this.driverCalls = {
      '2xx': driverCalls.labels('2xx'),
      '4xx': driverCalls.labels('4xx'),
      '5xx': driverCalls.labels('5xx'),
      unreachable: driverCalls.labels('unreachable'),
    };
  }

  taskRan(kind: string, outcome: TaskRunOutcome): void {
    this.tasks.labels(kind, outcome).inc();
  }

  heartbeat(outcome: HeartbeatOutcome): void {
    this.heartbeats[outcome].inc();
  }

  /** One driver call, from its start (performance.now()) to its answer or failure. */
  driverCall(status: number | undefined, startedAt: number): void {
    const result = status === undefined ? 'unreachable' : status >= 500 ? '5xx' : status >= 400 ? '4xx' : '2xx';
    this.driverCalls[result].observe((performance.now() - startedAt) / 1000);
  }
}
