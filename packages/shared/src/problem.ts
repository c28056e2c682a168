/** RFC 9457 problem documents: one shape for every error duplex answers with. */

export const problemTypePrefix = 'urn:duplex:problem:';

export interface ProblemDocument {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  request_id?: string;
  errors?: { location: string; message: string }[];
}

/** Every kind of error, with its stable code, HTTP status and title. */
export const problemKinds = {
  'validation-failed': { status: 400, title: 'The request does not match the contract' },
  'malformed-json': { status: 400, title: 'The body is not valid JSON' },
  'malformed-url': { status: 400, title: 'The URL cannot be decoded' },
  'invalid-name': { status: 400, title: 'The name is not allowed' },
  unauthenticated: { status: 401, title: 'An API token is required' },
  forbidden: { status: 403, title: "The token's role does not allow this" },
  'route-not-found': { status: 404, title: 'No such route' },
  'token-not-found': { status: 404, title: 'No such API token' },
  'agent-not-found': { status: 404, title: 'No such agent' },
  'task-not-found': { status: 404, title: 'No such task' },
  'storage-system-not-found': { status: 404, title: 'No such storage system' },
  'device-not-found': { status: 404, title: 'No such device' },
  'volume-not-found': { status: 404, title: 'No such volume' },
  'volume-exists': { status: 409, title: 'A volume with this name exists' },
  'device-exists': { status: 409, title: 'A device with this id exists' },
  'device-in-service': { status: 409, title: 'Only an offline device can be retired' },
  'device-retired': { status: 409, title: 'The device is retired; add it again first' },
  'wrong-server': { status: 409, title: 'The agent belongs to another server' },
  'agent-mismatch': { status: 409, title: 'The report is for another storage system or cluster than the agent serves' },
  'stale-incarnation': { status: 409, title: 'A newer incarnation of the agent is registered' },
  'task-not-cancellable': { status: 409, title: 'Only a queued task can be cancelled' },
  'idempotency-key-in-use': { status: 409, title: 'A request with this key is still being processed' },
  'stale-fencing-token': { status: 409, title: 'The fencing token is older than one already seen' },
  'stale-epoch': { status: 409, title: 'The epoch is older than the one recorded on the device' },
  'event-id-unknown': { status: 410, title: 'The event stream cannot resume after this event id' },
  'payload-too-large': { status: 413, title: 'The body is too large' },
  'uri-too-long': { status: 414, title: 'The URL is too long' },
  'unsupported-media-type': { status: 415, title: 'The body must be application/json' },
  'too-many-failures': { status: 429, title: 'Too many failed attempts to authenticate from this address' },
  'idempotency-key-reused': { status: 422, title: 'The idempotency key was used with another body' },
  'insufficient-capacity': { status: 422, title: 'The device does not have the capacity' },
  'device-unavailable': { status: 422, title: 'The device is unavailable' },
  'invalid-task': { status: 422, title: 'The task cannot be carried out' },
  'internal-error': { status: 500, title: 'Internal error' },
  'upstream-unavailable': { status: 503, title: 'A service this one depends on is unavailable' },
  'database-unavailable': { status: 503, title: 'The database is unavailable' },
  'not-ready': { status: 503, title: 'The service is not ready' },
  fenced: { status: 503, title: 'The cluster does not hold its lease; it takes no work until it does' },
  'cluster-not-recovering': { status: 409, title: 'Only a recovering cluster can fail back' },
  'cluster-not-found': { status: 404, title: 'No such cluster' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ProblemCode = keyof typeof problemKinds;

export class ProblemError extends Error {
  readonly code: ProblemCode;
  readonly status: number;
  readonly retryAfterSeconds: number | undefined;
  readonly errors: ProblemDocument['errors'];

  constructor(
    code: ProblemCode,
    detail: string,
    options: { retryAfterSeconds?: number; errors?: ProblemDocument['errors']; cause?: unknown } = {},
  ) {
    super(detail, { cause: options.cause });
    this.name = 'ProblemError';
    this.code = code;
    this.status = problemKinds[code].status;
    this.retryAfterSeconds = options.retryAfterSeconds ?? (this.status === 503 ? 1 : undefined);
    this.errors = options.errors;
  }

  toDocument(extra: { instance?: string; request_id?: string } = {}): ProblemDocument {
    return problemDocument(this.code, this.message, { ...extra, errors: this.errors });
  }
}

export function problemDocument(
  code: ProblemCode,
  detail: string,
  extra: { instance?: string; request_id?: string; errors?: ProblemDocument['errors'] } = {},
): ProblemDocument {
  const kind = problemKinds[code];
  const document: ProblemDocument = { type: problemTypePrefix + code, title: kind.title, status: kind.status, detail };
  if (extra.instance !== undefined) document.instance = extra.instance;
  if (extra.request_id !== undefined) document.request_id = extra.request_id;
  if (extra.errors !== undefined) document.errors = extra.errors;
  return document;
}

/** The code of a problem document's type, or undefined for a foreign type. */
export function problemCodeOf(document: { type?: unknown }): ProblemCode | undefined {
  if (typeof document.type !== 'string' || !document.type.startsWith(problemTypePrefix)) return undefined;
  const code = document.type.slice(problemTypePrefix.length);
  return code in problemKinds ? (code as ProblemCode) : undefined;
}
