import { randomHex } from './random-hex.ts';

/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` header that
 * carries one trace across services, `version-traceid-parentid-flags` in lower-case hex.
 */
export interface TraceContext {
  /** 32 hex digits, not all zero: the whole trace. */
  traceId: string;
  /** 16 hex digits, not all zero: this hop (the parent id of the next one). */
  spanId: string;
  /** 2 hex digits; bit 0 is "sampled". */
  flags: string;
}

const zeroTraceId = '0'.repeat(32);
const zeroSpanId = '0'.repeat(16);
const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The trace context a `traceparent` header names, or undefined when it is missing or invalid
 * (the receiver then starts a new trace, as the specification says). Version 00 must be exactly
 * four fields; a later version may append fields, which are ignored; version ff is invalid.
 */
export function parseTraceparent(header: string | string[] | undefined): TraceContext | undefined {
  // Repeated traceparent headers cannot be told apart, so they count as none.
  if (typeof header !== 'string') return undefined;
  const match = traceparentPattern.exec(header.trim());
  if (!match) return undefined;
  const [, version, traceId, spanId, flags, rest] = match as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff') return undefined;
  if (version === '00' && rest !== undefined) return undefined;
  if (traceId === zeroTraceId || spanId === zeroSpanId) return undefined;
  return { traceId, spanId, flags };
}

export function formatTraceparent(context: TraceContext): string {
  return `00-${context.traceId}-${context.spanId}-${context.flags}`;
}

function nonZeroHex(bytes: number): string {
  for (;;) {
    const hex = randomHex(bytes);
    if (!/^0+$/.test(hex)) return hex;
  }
}

/** A new trace, sampled. */
export function newTrace(): TraceContext {
  return { traceId: nonZeroHex(16), spanId: nonZeroHex(8), flags: '01' };
}

/** The next hop of a trace: the same trace id and flags, a span id of its own. */
export function childSpan(parent: TraceContext): TraceContext {
  return { traceId: parent.traceId, spanId: nonZeroHex(8), flags: parent.flags };
}

/** A child of the trace the header names, or a new trace when it names none. */
export function continueTrace(header: string | string[] | undefined): TraceContext {
  const parent = parseTraceparent(header);
  return parent ? childSpan(parent) : newTrace();
}

/** The fields every log line of a traced piece of work carries. */
export function traceLogFields(context: TraceContext): { trace_id: string; span_id: string } {
  return { trace_id: context.traceId, span_id: context.spanId };
}
