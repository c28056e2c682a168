import type { ServerApi } from '@duplex/contracts';

export type Problem = ServerApi.components['schemas']['Problem'];

/** A refusal or failure the server answered with an RFC 9457 problem document. */
export class ProblemResponseError extends Error {
  override name = 'ProblemResponseError';
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(`${status} ${problem.title}${problem.detail ? `: ${problem.detail}` : ''}`);
  }

  /** The problem's code: `task-not-found` for `urn:duplex:problem:task-not-found`. */
  get code(): string {
    return this.problem.type.replace(/^urn:duplex:problem:/, '');
  }
}

/**
 * The data of an openapi-fetch result, or a ProblemResponseError for its problem document (a
 * body that is not one still becomes an error, with the status as its title).
 */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.response.ok && result.error === undefined) return result.data as T;
  const body = result.error as Partial<Problem> | undefined;
  const problem: Problem =
    body && typeof body === 'object' && typeof body.type === 'string' && typeof body.title === 'string'
      ? (body as Problem)
      : { type: 'about:blank', title: result.response.statusText || `HTTP ${result.response.status}`, status: result.response.status };
  throw new ProblemResponseError(result.response.status, problem);
}
