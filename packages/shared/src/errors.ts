import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ProblemError, problemDocument, type ProblemCode, type ProblemDocument } from './problem.ts';
import { isDatabaseUnavailable } from './database-errors.ts';
import { UpstreamError } from './http-client.ts';

const frameworkCodes: Record<string, ProblemCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload-too-large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported-media-type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'malformed-json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed-json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'malformed-json',
};

/** Maps any error to a problem document; 5xx details stay in the log. */
export function toProblem(error: unknown, request: FastifyRequest): { problem: ProblemDocument; retryAfter?: number } {
  const extra = { instance: request.url.split('?')[0] ?? request.url, request_id: String(request.id) };
  if (error instanceof ProblemError) {
    const problem = error.toDocument(extra);
    if (error.status >= 500) problem.detail = hiddenDetail(error.code);
    return { problem, retryAfter: error.retryAfterSeconds };
  }
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    const errors = fastifyError.validation.map((issue) => ({
      location: `${fastifyError.validationContext ?? 'request'}${issue.instancePath}`,
      message: describeIssue(issue),
    }));
    const detail = errors.map((issue) => `${issue.location} ${issue.message}`).join('; ');
    return { problem: problemDocument('validation-failed', detail, { ...extra, errors }) };
  }
  const frameworkCode = fastifyError.code ? frameworkCodes[fastifyError.code] : undefined;
  if (frameworkCode) return { problem: problemDocument(frameworkCode, fastifyError.message, extra) };
  if (error instanceof SyntaxError && fastifyError.statusCode === 400) {
    return { problem: problemDocument('malformed-json', `the body is not valid JSON: ${error.message}`, extra) };
  }
  if (isDatabaseUnavailable(error)) {
    return { problem: problemDocument('database-unavailable', hiddenDetail('database-unavailable'), extra), retryAfter: 1 };
  }
  if (error instanceof UpstreamError) {
    return { problem: problemDocument('upstream-unavailable', hiddenDetail('upstream-unavailable'), extra), retryAfter: 1 };
  }
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    const problem = problemDocument('validation-failed', fastifyError.message, extra);
    problem.status = status;
    problem.title = 'The request cannot be accepted';
    return { problem };
  }
  return { problem: problemDocument('internal-error', hiddenDetail('internal-error'), extra) };
}

function describeIssue(issue: { keyword: string; message?: string; params: Record<string, unknown> }): string {
  if (issue.keyword === 'additionalProperties') return `must not have property '${String(issue.params.additionalProperty)}'`;
  if (issue.keyword === 'enum') return `must be one of ${JSON.stringify(issue.params.allowedValues)}`;
  return issue.message ?? 'is invalid';
}

function hiddenDetail(code: ProblemCode): string {
  return code === 'internal-error'
    ? 'An unexpected error occurred; the request id names it in the logs.'
    : 'A dependency is unavailable; retry after the indicated delay.';
}

/**
 * Logs work answered with a problem (`what` names it: a request, an execution): a failure (5xx)
 * at error with its stack, a refusal at info with the problem. A service still starting answers
 * every readiness probe with not-ready: routine, so no error and no stack.
 */
export function logProblem(log: FastifyBaseLogger, what: string, error: unknown, problem: ProblemDocument, fields: Record<string, unknown> = {}): void {
  const notReady = error instanceof ProblemError && error.code === 'not-ready';
  if (problem.status >= 500 && !notReady) log.error({ ...fields, err: error }, `${what} failed`);
  else log.info({ ...fields, problem_type: problem.type, detail: notReady ? error.message : problem.detail }, `${what} refused`);
}

export function registerProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler(async (error, request, reply) => {
    const { problem, retryAfter } = toProblem(error, request);
    logProblem(request.log, 'request', error, problem);
    return sendProblem(reply, problem, retryAfter);
  });
  app.setNotFoundHandler(async (request, reply) => {
    const problem = problemDocument('route-not-found', `${request.method} ${request.url.split('?')[0]} is not a route of this service`, {
      instance: request.url.split('?')[0] ?? request.url,
      request_id: String(request.id),
    });
    return sendProblem(reply, problem);
  });
}

export function sendProblem(reply: FastifyReply, problem: ProblemDocument, retryAfter?: number): FastifyReply {
  if (retryAfter !== undefined) reply.header('retry-after', String(retryAfter));
  // RFC 9110: a 401 says which scheme would be accepted.
  if (problem.status === 401) reply.header('www-authenticate', 'Bearer realm="duplex"');
  return reply.code(problem.status).type('application/problem+json').send(problem);
}
