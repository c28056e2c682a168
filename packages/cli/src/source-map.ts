/**
 * Trims a bundle's source map to the files that matter in a stack trace. Node, run with
 * --enable-source-maps, decodes the whole map the first time it formats a stack trace (the
 * first error a service logs), and the mappings of a service's dependencies cost about 75 MB
 * of heap for good. With only duplex's own sources mapped, a frame in duplex code names its
 * .ts file and line, and a frame in a dependency keeps its position in the bundle, which
 * names the dependency's file in a comment above the code.
 */

/** A source map (version 3) as esbuild writes it. */
export interface SourceMapV3 {
  version: number;
  sources: string[];
  sourcesContent?: (string | null)[];
  names: string[];
  mappings: string;
  [field: string]: unknown;
}

const base64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const base64Values = new Map([...base64].map((char, index) => [char, index]));

/** The signed numbers of one segment of the `mappings` field (base64 VLQ). */
export function decodeSegment(text: string): number[] {
  const values: number[] = [];
  let value = 0;
  let shift = 0;
  for (const char of text) {
    const digit = base64Values.get(char);
    if (digit === undefined) throw new Error(`not a base64 VLQ digit: '${char}'`);
    value += (digit & 31) * 2 ** shift;
    shift += 5;
    if ((digit & 32) === 0) {
      values.push(value % 2 === 1 ? -(value - 1) / 2 : value / 2);
      value = 0;
      shift = 0;
    }
  }
  return values;
}

export function encodeSegment(values: readonly number[]): string {
  let text = '';
  for (const signed of values) {
    let value = signed < 0 ? -signed * 2 + 1 : signed * 2;
    do {
      let digit = value & 31;
      value = Math.floor(value / 32);
      if (value > 0) digit |= 32;
      text += base64[digit];
    } while (value > 0);
  }
  return text;
}

/**
 * The map with only the sources `keep` accepts. Code from the others becomes unmapped: one
 * segment without a source ends the mapping before it, so that no dependency's line is
 * blamed on a duplex file.
 */
export function keepSources(map: SourceMapV3, keep: (source: string) => boolean): SourceMapV3 {
  const newIndex = new Map<number, number>();
  const sources: string[] = [];
  const sourcesContent: (string | null)[] = [];
  map.sources.forEach((source, index) => {
    if (!keep(source)) return;
    newIndex.set(index, sources.length);
    sources.push(source);
    sourcesContent.push(map.sourcesContent?.[index] ?? null);
  });
  // Every field but the generated column is relative to the previous segment of the whole map.
  const read = { source: 0, line: 0, column: 0, name: 0 };
  const written = { source: 0, line: 0, column: 0, name: 0 };
  let unmapped = true;
  const lines = map.mappings.split(';').map((lineText) => {
    let column = 0;
    let writtenColumn = 0;
    const segments: string[] = [];
    for (const segmentText of lineText.split(',')) {
      if (segmentText === '') continue;
      const fields = decodeSegment(segmentText);
      column += fields[0] ?? 0;
      if (fields.length >= 4) {
        read.source += fields[1] ?? 0;
        read.line += fields[2] ?? 0;
        read.column += fields[3] ?? 0;
        if (fields.length >= 5) read.name += fields[4] ?? 0;
      }
      const source = fields.length >= 4 ? newIndex.get(read.source) : undefined;
      if (source === undefined) {
        if (!unmapped) segments.push(encodeSegment([column - writtenColumn]));
        if (!unmapped) writtenColumn = column;
        unmapped = true;
        continue;
      }
      const out = [column - writtenColumn, source - written.source, read.line - written.line, read.column - written.column];
      if (fields.length >= 5) {
        out.push(read.name - written.name);
        written.name = read.name;
      }
      segments.push(encodeSegment(out));
      writtenColumn = column;
      written.source = source;
      written.line = read.line;
      written.column = read.column;
      unmapped = false;
    }
    return segments.join(',');
  });
  return { ...map, sources, ...(map.sourcesContent ? { sourcesContent } : {}), mappings: lines.join(';') };
}
