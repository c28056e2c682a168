import { Agent, fetch as undiciFetch } from 'undici';

/** What HTTPS calls present and trust (a CA file's contents; a certificate and key for mutual TLS). */
export interface ClientTls {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface FailoverOptions {
  /** The servers' base URLs; any of them answers for the whole system. */
  servers: readonly string[];
  /** How long a server may take to answer with headers before the next one is tried (default 10 s). */
  timeoutMs?: number;
  /** How many times each server is tried before giving up (default 2). */
  rounds?: number;
  tls?: ClientTls;
  /** Told each time a call moves on to another server, and why. */
  onFailover?: (from: string, to: string, reason: string) => void;
}

/** No server answered: each one's failure, by URL. */
export class ServersUnavailableError extends Error {
  override name = 'ServersUnavailableError';
  constructor(readonly failures: Record<string, string>) {
    super(`no server answered: ${Object.entries(failures).map(([server, reason]) => `${server} (${reason})`).join(', ')}`);
  }
}

const idempotentMethods = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);
/** Errors that mean the request never reached the server, so any request may go to the next. */
const notSentCodes = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

const errorCode = (error: unknown): string | undefined => {
  const cause = (error as { cause?: { code?: string } }).cause;
  return cause?.code ?? (error as { code?: string }).code;
};

/**
 * A `fetch` that sends each request to one of the servers and, when that one cannot be reached
 * or answers 5xx, to the next. A request that might have been applied already is sent again
 * only when that is safe: idempotent methods, and POSTs that carry an Idempotency-Key (the
 * server then answers the repeat with the task the first one created). The server that last
 * answered is tried first. A server's answer counts from its headers: a stream's body may run
 * for as long as it likes.
 */
export function createFailoverFetch(options: FailoverOptions): typeof fetch {
  if (options.servers.length === 0) throw new Error('at least one server URL is needed');
  const servers = options.servers.map((server) => server.replace(/\/$/, ''));
  const timeoutMs = options.timeoutMs ?? 10_000;
  const rounds = options.rounds ?? 2;
  const dispatcher = options.tls ? new Agent({ connect: { ...options.tls } }) : undefined;
  let preferred = 0;

  return (async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const original = new Request(input, init);
    // The caller's own signal, not the copy's: a Request's signal follows the one it was made
    // from only while the Request lives, and `original` is gone once the headers are back, so
    // after a garbage collection an abort through it would no longer end a streaming body.
    const callerSignal = init?.signal ?? (input instanceof Request ? input.signal : undefined);
    const target = new URL(original.url);
    const path = `${target.pathname}${target.search}`;
    const body = original.body === null ? undefined : await original.arrayBuffer();
    const method = original.method.toUpperCase();
    const repeatable = idempotentMethods.has(method) || original.headers.has('idempotency-key');
    const failures: Record<string, string> = {};
    let lastAnswer: Response | undefined;
    const attempts = servers.length * rounds;
    for (let attempt = 0; attempt < attempts; attempt += 1) {
      if (attempt > 0 && attempt % servers.length === 0) await new Promise((resolve) => setTimeout(resolve, 100 * (attempt / servers.length)));
      const index = (preferred + attempt) % servers.length;
      const server = servers[index]!;
      // The caller's signal ends the request and its body at any time; the timeout only until the headers.
      const timeout = new AbortController();
      const signal = callerSignal ? AbortSignal.any([callerSignal, timeout.signal]) : timeout.signal;
      const timer = setTimeout(() => timeout.abort(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      let reason: string;
      let mayRetry: boolean;
      try {
        const response = (await undiciFetch(`${server}${path}`, {
          method,
          headers: original.headers as never,
          body,
          signal,
          redirect: 'manual',
          ...(dispatcher ? { dispatcher } : {}),
        })) as unknown as Response;
        if (response.status < 500 || !repeatable) {
          preferred = index;
          return response;
        }
        lastAnswer?.body?.cancel().catch(() => {});
        lastAnswer = response;
        reason = `answered ${response.status}`;
        mayRetry = true;
      } catch (error) {
        if (callerSignal?.aborted) throw callerSignal.reason;
        const code = errorCode(error);
        const cause = (error as { cause?: { message?: string } }).cause;
        reason = timeout.signal.aborted ? `no answer within ${timeoutMs} ms` : (code ?? cause?.message ?? (error as Error).message);
        mayRetry = repeatable || (code !== undefined && notSentCodes.has(code));
      } finally {
        clearTimeout(timer);
      }
      failures[server] = reason;
      if (!mayRetry) break;
      const next = servers[(index + 1) % servers.length]!;
      if (attempt + 1 < attempts) options.onFailover?.(server, next, reason);
    }
    if (lastAnswer) return lastAnswer;
    throw new ServersUnavailableError(failures);
  }) as typeof fetch;
}
