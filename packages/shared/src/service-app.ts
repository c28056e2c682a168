import type { IncomingMessage } from 'node:http';
import { loadContract, loadResolvedContract, type ContractName } from '@duplex/contracts';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { mountContract, type OperationHandler } from './contract-routes.ts';
import { registerProblemHandlers, sendProblem } from './errors.ts';
import { createServiceMetrics, type ServiceMetrics } from './metrics.ts';
import { problemDocument, ProblemError } from './problem.ts';
import { randomHex } from './random-hex.ts';
import { LazyChildLogger } from './request-logger.ts';
import { AuthFailures } from './auth-failures.ts';
import { useClientTls } from './http-client.ts';
import { installServiceAuthentication, type CredentialCheck } from './service-auth.ts';
import type { ServiceTls } from './tls.ts';
import { continueTrace, formatTraceparent, newTrace, traceLogFields, type TraceContext } from './trace-context.ts';
import { createSerializerCompiler, createValidatorCompiler } from './validation.ts';

export interface ServiceAppOptions {
  service: string;
  contract: ContractName;
  /** Pino options, or false to log nothing (tests). */
  logger?: FastifyServerOptions['logger'];
  bodyLimit?: number;
  /**
   * Checks of the credentials of the callers the contract names (x-duplex-caller), by caller,
   * and the limit on failed authentications (AUTH_FAILURE_LIMIT per AUTH_FAILURE_WINDOW_MS).
   */
  credentials?: { checks: Record<string, CredentialCheck>; failureLimit: number; failureWindowMs: number };
  /** HTTPS to serve with and what the service's own calls present and trust (loadTls); plain HTTP when omitted. */
  tls?: ServiceTls;
  /**
   * Swagger UI at /docs, showing the service's own contract and, in its list of definitions,
   * these other contracts too. The servers serve it for all four contracts; the processes
   * inside a cluster serve only their contract at /openapi.json, and skip the cost of Swagger
   * UI at every start.
   */
  docs?: { alsoContracts: readonly ContractName[] };
}

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

/** A caller's request id is kept when it is sane, so one id follows a request across hops. */
function requestIdOf(request: IncomingMessage): string {
  const given = request.headers['x-request-id'];
  if (typeof given === 'string' && requestIdPattern.test(given)) return given;
  return `req-${randomHex(8)}`;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** This app's metrics registry; services register their own metrics in it. */
    metrics: ServiceMetrics;
  }
  interface FastifyRequest {
    /** This request's span: a child of the caller's `traceparent`, or a new trace. */
    trace: TraceContext;
  }
}

/** A request slower than this is logged at info even when it succeeded. */
const slowRequestMs = 1_000;

/**
 * Logs a request's start at debug, and its end at info when it was refused, failed or slow,
 * at debug otherwise. Heartbeats, health checks, dispatches and reports are most of a busy
 * service's requests; with two info lines each, logging took about a third of a server's CPU
 * per heartbeat (bench/README.md, heartbeat scale) and drowned what mattered. The metrics
 * still count every request.
 */
class RequestLogController extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) return void reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
    const routine = reply.statusCode < 400 && reply.elapsedTime < slowRequestMs;
    reply.log[routine ? 'debug' : 'info']({ res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}

/**
 * Each request's span, made when its logger is (before the first log line of the request),
 * kept on the raw request and picked up by the onRequest hook. A property rather than a
 * WeakMap: weak entries made at every request cost the garbage collector more.
 */
const requestTrace = Symbol('duplex.trace');
type TracedRequest = IncomingMessage & { [requestTrace]?: TraceContext };

export function defaultLogger(service: string): FastifyServerOptions['logger'] {
  return {
    level: process.env.LOG_LEVEL ?? 'info',
    base: { service, pid: process.pid },
    // Credentials never reach the logs, whatever logs a request's headers.
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'secret'], censor: '[redacted]' },
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
  };
}

/**
 * A Fastify instance set up the same way for every duplex service: request ids, strict
 * validation, problem+json errors, and the service's contract served at /openapi.json (and in
 * Swagger UI at /docs when asked). Routes are added by mountServiceContract.
 */
export async function createServiceApp(options: ServiceAppOptions): Promise<FastifyInstance> {
  if (options.tls) useClientTls(options.tls.client);
  const app = Fastify({
    ...(options.tls?.server ? { https: options.tls.server } : {}),
    logger: options.logger ?? defaultLogger(options.service),
    genReqId: requestIdOf,
    logController: new RequestLogController({ requestIdLogLabel: 'request_id' }),
    // Every log line of a request, "incoming request" included, carries its trace.
    childLoggerFactory(logger, bindings, loggerOptions, rawRequest) {
      const trace = continueTrace(rawRequest.headers.traceparent);
      (rawRequest as TracedRequest)[requestTrace] = trace;
      return LazyChildLogger.of(logger, () => ({ ...bindings, ...traceLogFields(trace) }), loggerOptions);
    },
    bodyLimit: options.bodyLimit ?? 1_048_576,
    // Ids up to 191 characters (agents' ids) and their percent-encodings fit a path parameter.
    routerOptions: { maxParamLength: 512 },
    // Paths the router cannot take (undecodable, or a parameter longer than the above) are
    // refused with a problem document like every other refusal, not Fastify's own JSON.
    frameworkErrors(error, request, reply) {
      const tooLong = (error as { code?: string }).code === 'FST_ERR_MAX_PARAM_LENGTH';
      const path = (request.raw.url ?? '').split('?')[0] ?? '';
      const problem = problemDocument(tooLong ? 'uri-too-long' : 'malformed-url', tooLong ? 'a path segment is longer than 512 characters' : 'the path is not valid percent-encoding', {
        instance: path.slice(0, 256),
        request_id: String(request.id),
      });
      void sendProblem(reply.header('x-request-id', String(request.id)), problem);
    },
    return503OnClosing: true,
    forceCloseConnections: true,
  });
  app.setValidatorCompiler(createValidatorCompiler());
  app.setSerializerCompiler(createSerializerCompiler());
  // Only JSON bodies are accepted; anything else is answered 415.
  app.removeContentTypeParser(['text/plain']);
  registerProblemHandlers(app);
  const metrics = createServiceMetrics();
  app.decorate('metrics', metrics);
  app.decorateRequest('trace', null as unknown as TraceContext);
  app.addHook('onRequest', async (request, reply) => {
    request.trace = (request.raw as TracedRequest)[requestTrace] ?? newTrace();
    reply.header('traceparent', formatTraceparent(request.trace));
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    const { config, url } = request.routeOptions;
    // The contract's path template, or the router's pattern; never the raw URL, whose ids would explode the label set.
    const route = 'openApiPath' in config && typeof config.openApiPath === 'string' ? config.openApiPath : (url ?? 'unmatched');
    metrics.httpRequestDuration.observe({ method: request.method, route, status: reply.statusCode }, reply.elapsedTime / 1000);
  });
  const { credentials } = options;
  if (credentials) installServiceAuthentication(app, credentials.checks, new AuthFailures(credentials.failureLimit, credentials.failureWindowMs));
  if (options.docs) await serveSwaggerUi(app, options.contract, options.docs.alsoContracts);
  return app;
}

/**
 * Swagger UI at /docs: `contract` at /docs/json and each of `others` at /docs/contracts/<name>.json,
 * chosen from the page's list of definitions. Loaded only by the services that serve it.
 */
async function serveSwaggerUi(app: FastifyInstance, contract: ContractName, others: readonly ContractName[]): Promise<void> {
  const [{ default: swagger }, { default: swaggerUi }] = await Promise.all([import('@fastify/swagger'), import('@fastify/swagger-ui')]);
  await app.register(swagger, { mode: 'static', specification: { document: loadContract(contract) as never } });
  const urls = [{ name: contract, url: '/docs/json' }, ...others.map((name) => ({ name, url: `/docs/contracts/${name}.json` }))];
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { urls, 'urls.primaryName': contract } as never });
  for (const name of others) {
    app.get(`/docs/contracts/${name}.json`, { logLevel: 'warn' }, async () => loadContract(name));
  }
}

export type ReadinessCheck = () => Promise<Record<string, string>>;

/** Health, readiness, metrics and the contract: the operations every service has. */
export function operationalHandlers(contract: ContractName, readiness: ReadinessCheck) {
  return {
    getHealth: async () => ({ status: 'ok' as const }),
    getReadiness: async () => {
      const checks = await readiness();
      const failing = Object.entries(checks).filter(([, value]) => value !== 'ok');
      if (failing.length > 0) {
        throw new ProblemError('not-ready', failing.map(([name, value]) => `${name}: ${value}`).join('; '));
      }
      return { status: 'ready' as const, checks };
    },
    getOpenApiDocument: async () => loadContract(contract),
    getMetrics: async (request: FastifyRequest, reply: FastifyReply) => {
      const { metrics } = request.server;
      return reply.type(metrics.contentType).send(await metrics.scrape());
    },
  };
}

export function mountServiceContract(
  app: FastifyInstance,
  contract: ContractName,
  handlers: Record<string, OperationHandler<never>>,
): void {
  mountContract(app, loadResolvedContract(contract), handlers);
}
