import { ProblemError } from './problem.ts';

/** Cursors are opaque to clients: base64url JSON of the last item's sort key. */
export function encodeCursor(key: unknown[]): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

export function decodeCursor(cursor: string, arity: number): unknown[] {
  try {
    const key: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(key) && key.length === arity) return key;
  } catch {
    // reported below
  }
  throw invalidCursor();
}

export const invalidCursor = (): ProblemError =>
  new ProblemError('validation-failed', 'cursor is not one this service issued', {
    errors: [{ location: 'querystring/cursor', message: 'is not a valid cursor' }],
  });

/** One page of an in-memory collection sorted by id. */
export function pageById<T extends { id: string }>(
  items: T[],
  limit: number,
  cursor: string | undefined,
): { items: T[]; next_cursor: string | null } {
  const sorted = [...items].sort((a, b) => a.id.localeCompare(b.id));
  const after = cursor === undefined ? undefined : String(decodeCursor(cursor, 1)[0]);
  const rest = after === undefined ? sorted : sorted.filter((item) => item.id.localeCompare(after) > 0);
  const page = rest.slice(0, limit);
  const last = page.at(-1);
  return { items: page, next_cursor: rest.length > limit && last ? encodeCursor([last.id]) : null };
}
