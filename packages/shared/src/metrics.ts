import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export { Counter, Gauge, Histogram, Registry };

/**
 * One app's metrics. Each app has a registry of its own rather than prom-client's global one,
 * so several apps in one process (as in tests) neither clash nor count each other's work.
 */
export interface ServiceMetrics {
  /** Where the app and its services register their metrics. */
  registry: Registry;
  httpRequestDuration: Histogram<'method' | 'route' | 'status'>;
  /** The Content-Type of the exposition. */
  contentType: string;
  /** The exposition served at /metrics: the process's Node metrics, then the app's own. */
  scrape(): Promise<string>;
}

let nodeRegistry: Registry | undefined;

/**
 * Node's default metrics describe the process, not an app, and each set keeps an event-loop
 * monitor and a GC observer running for good: one set per process, shared by its apps.
 */
function nodeMetrics(): Registry {
  if (!nodeRegistry) {
    nodeRegistry = new Registry();
    collectDefaultMetrics({ register: nodeRegistry });
  }
  return nodeRegistry;
}

/** Seconds, from a millisecond to a minute: HTTP requests, dispatches, driver calls and whole tasks. */
export const latencyBuckets: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * An app's registry with the HTTP request duration histogram, served together with Node's
 * default metrics (CPU, memory, GC, handles, and the event loop lag as
 * nodejs_eventloop_lag_seconds with its percentiles).
 */
export function createServiceMetrics(): ServiceMetrics {
  const node = nodeMetrics();
  const registry = new Registry();
  const httpRequestDuration = new Histogram({
    name: 'duplex_http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method, route pattern and status.',
    labelNames: ['method', 'route', 'status'],
    buckets: [...latencyBuckets],
    registers: [registry],
  });
  return {
    registry,
    httpRequestDuration,
    contentType: registry.contentType,
    async scrape() {
      const [nodeText, appText] = await Promise.all([node.metrics(), registry.metrics()]);
      // Each part ends with a newline; the blank line between them separates two families, as within each.
      return `${nodeText}\n${appText}`;
    },
  };
}

/** Seconds between two instants, for observing durations measured by Postgres timestamps. */
export function secondsBetween(from: Date, to: Date): number {
  return Math.max(0, (to.getTime() - from.getTime()) / 1000);
}
