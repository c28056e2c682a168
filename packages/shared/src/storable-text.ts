import { ProblemError } from './problem.ts';

/** U+0000, or half of a surrogate pair without its other half: no Postgres text or jsonb holds them. */
const unstorable = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Where in `value` (a parsed body, params or query) a string Postgres cannot store is, if anywhere. */
export function unstorableTextAt(value: unknown, location: string, depth = 0): string | undefined {
  if (typeof value === 'string') return unstorable.test(value) ? location : undefined;
  // The body parser bounds the size; this bounds the walk on deeply nested input.
  if (value === null || typeof value !== 'object' || depth > 64) return undefined;
  for (const [key, item] of Object.entries(value)) {
    if (unstorable.test(key)) return `${location}/${key}`;
    const found = unstorableTextAt(item, `${location}/${key}`, depth + 1);
    if (found) return found;
  }
  return undefined;
}

/** Refuses a request whose body, path or query holds text the database cannot store, before any handler writes it. */
export function refuseUnstorableText(request: { body?: unknown; params?: unknown; query?: unknown }): void {
  const location = unstorableTextAt(request.params, 'params') ?? unstorableTextAt(request.query, 'querystring') ?? unstorableTextAt(request.body, 'body');
  if (location) {
    const message = 'must not hold U+0000 or an unpaired surrogate';
    throw new ProblemError('validation-failed', `${location} ${message}`, { errors: [{ location, message }] });
  }
}
