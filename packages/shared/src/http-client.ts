import { Pool } from 'undici';
import type { ClientTls } from './tls.ts';

/**
 * What this process's HTTPS calls present and trust (TLS_CA_FILE, and TLS_CERT_FILE and
 * TLS_KEY_FILE for mutual TLS). Set once at start by the service (createServiceApp); every
 * client made after uses it, so the many places that call another service need not carry it.
 */
let processClientTls: ClientTls = {};

export function useClientTls(tls: ClientTls): void {
  processClientTls = tls;
}

export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    readonly upstream: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(`${upstream}: ${message}`, options);
  }
}

export interface JsonResponse<T> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

export interface CallOptions {
  body?: unknown;
  requestId?: string;
  /** A W3C traceparent to send, so the upstream's log lines join the caller's trace. */
  traceparent?: string;
  timeoutMs?: number;
  headers?: Record<string, string>;
}

/**
 * A keep-alive JSON client for one upstream service. Network failures and timeouts throw
 * UpstreamError; any HTTP answer, 4xx and 5xx included, is returned for the caller to judge.
 */
export class JsonClient {
  readonly baseUrl: string;
  private readonly pool: Pool;

  constructor(
    baseUrl: string,
    private readonly options: {
      name: string;
      timeoutMs?: number;
      connections?: number;
      /** Sent with every call (credentials). */
      headers?: Record<string, string>;
      /** For an https URL: what to present and trust; the process's (useClientTls) when omitted. */
      tls?: ClientTls;
    },
  ) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    const connect = this.baseUrl.startsWith('https:') ? { ...(options.tls ?? processClientTls) } : undefined;
    this.pool = new Pool(this.baseUrl, { connections: options.connections ?? 16, keepAliveTimeout: 10_000, ...(connect ? { connect } : {}) });
  }

  async call<T = unknown>(method: string, path: string, options: CallOptions = {}): Promise<JsonResponse<T>> {
    const timeoutMs = options.timeoutMs ?? this.options.timeoutMs ?? 5_000;
    const headers: Record<string, string> = { accept: 'application/json', ...this.options.headers, ...options.headers };
    if (options.requestId) headers['x-request-id'] = options.requestId;
    if (options.traceparent) headers.traceparent = options.traceparent;
    let payload: string | undefined;
    if (options.body !== undefined) {
      payload = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    try {
      const response = await this.pool.request({
        method: method as 'GET',
        path,
        headers,
        body: payload,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        // undici checks its own timeouts on a coarse timer (about 0.5 s); health checks need the exact bound.
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await response.body.text();
      return { status: response.statusCode, headers: response.headers, body: (text ? JSON.parse(text) : undefined) as T };
    } catch (error) {
      throw new UpstreamError(this.options.name, (error as Error).message, { cause: error });
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }

  /** Whether GET `path` answers 200 within `timeoutMs`; false for any other answer or a failure. */
  async answersOk(path: string, timeoutMs: number): Promise<boolean> {
    try {
      return (await this.call('GET', path, { timeoutMs })).status === 200;
    } catch {
      return false;
    }
  }

  /** Closes at once, failing requests still in flight (a long poll, for instance). */
  async destroy(): Promise<void> {
    await this.pool.destroy();
  }
}

/** Whether a service answers GET /healthz with 200 within the timeout. */
export async function isHealthy(baseUrl: string, timeoutMs: number): Promise<boolean> {
  return answersOk(baseUrl, '/healthz', timeoutMs);
}

/** Whether a duplex service says it is ready (GET /readyz answers 200) within `timeoutMs`. */
export async function isReady(baseUrl: string, timeoutMs: number): Promise<boolean> {
  return answersOk(baseUrl, '/readyz', timeoutMs);
}

async function answersOk(baseUrl: string, path: '/healthz' | '/readyz', timeoutMs: number): Promise<boolean> {
  const client = new JsonClient(baseUrl, { name: path === '/healthz' ? 'health check' : 'readiness check', timeoutMs, connections: 1 });
  try {
    return await client.answersOk(path, timeoutMs);
  } finally {
    await client.close();
  }
}
