/**
 * Where a service's memory is: its resident set from /proc, and V8's view of its heap from
 * the Node metrics every service serves at /metrics (prom-client's default metrics).
 */
import { rssBytes } from './process-usage.ts';

export interface HeapBreakdown {
  /** V8's heap as reserved (committed) and as used by live and not yet collected objects. */
  heap_total_bytes: number | null;
  heap_used_bytes: number | null;
  /** Memory held outside the heap by heap objects (Buffers and the like). */
  external_bytes: number | null;
  /** Committed size of each heap space: new (the young generation), old, code, large_object… */
  spaces_total_bytes: Record<string, number>;
}

/** The heap figures a service's /metrics reports; null when it does not answer. */
export async function heapOf(url: string): Promise<HeapBreakdown | null> {
  let text: string;
  try {
    const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2_000) });
    text = await response.text();
    if (response.status !== 200) return null;
  } catch {
    return null;
  }
  const value = (name: string): number | null => {
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return match ? Number(match[1]) : null;
  };
  const spaces: Record<string, number> = {};
  for (const match of text.matchAll(/^nodejs_heap_space_size_total_bytes\{space="([^"]+)"\} (\S+)$/gm)) spaces[match[1]!] = Number(match[2]);
  return {
    heap_total_bytes: value('nodejs_heap_size_total_bytes'),
    heap_used_bytes: value('nodejs_heap_size_used_bytes'),
    external_bytes: value('nodejs_external_memory_bytes'),
    spaces_total_bytes: spaces,
  };
}

/** RSS of a process, in bytes; null once it is gone. */
export const residentBytes = (pid: number): number | null => rssBytes(pid) ?? null;

export const megabytes = (bytes: number | null | undefined): string => (bytes === null || bytes === undefined ? '–' : `${(bytes / 1024 / 1024).toFixed(1)} MB`);
