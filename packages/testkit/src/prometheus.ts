/**
 * A strict reader of the Prometheus text exposition format 0.0.4, for tests that scrape
 * /metrics: it refuses what Prometheus would refuse (a bad name, label or value, a sample of
 * an undeclared family, a family declared twice), so a test that reads it also checks it.
 */

export interface PrometheusSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PrometheusFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string | undefined;
  samples: PrometheusSample[];
}

export class PrometheusExposition {
  constructor(readonly families: ReadonlyMap<string, PrometheusFamily>) {}

  /** The samples named `name` whose labels include all of `labels`. */
  samples(name: string, labels: Record<string, string> = {}): PrometheusSample[] {
    const family = this.families.get(familyNameOf(name, this.families) ?? name);
    return (family?.samples ?? []).filter(
      (sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
    );
  }

  /** The sum of those samples' values; 0 when there are none. */
  sum(name: string, labels: Record<string, string> = {}): number {
    return this.samples(name, labels).reduce((total, sample) => total + sample.value, 0);
  }
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const types = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const suffixes: Record<PrometheusFamily['type'], string[]> = {
  counter: [''],
  gauge: [''],
  untyped: [''],
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['', '_sum', '_count'],
};

function familyNameOf(sampleName: string, families: ReadonlyMap<string, PrometheusFamily>): string | undefined {
  if (families.has(sampleName)) return sampleName;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sampleName.endsWith(suffix) && families.has(sampleName.slice(0, -suffix.length))) return sampleName.slice(0, -suffix.length);
  }
  return undefined;
}

function parseValue(text: string, where: string): number {
  // As Prometheus reads them (Go's ParseFloat): NaN and Inf in any case.
  if (/^nan$/i.test(text)) return Number.NaN;
  if (/^[+]?inf(inity)?$/i.test(text)) return Number.POSITIVE_INFINITY;
  if (/^-inf(inity)?$/i.test(text)) return Number.NEGATIVE_INFINITY;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: '${text}' is not a number`);
  return Number(text);
}

/** Reads `{a="1",b="x\"y"}` starting at `start` (the brace); returns the labels and the index after `}`. */
function parseLabels(line: string, start: number, where: string): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let index = start + 1;
  for (;;) {
    if (line[index] === '}') return { labels, end: index + 1 };
    const equals = line.indexOf('=', index);
    if (equals < 0) throw new Error(`${where}: a label has no value`);
    const name = line.slice(index, equals).trim();
    if (!labelName.test(name)) throw new Error(`${where}: '${name}' is not a label name`);
    if (name in labels) throw new Error(`${where}: label ${name} repeats`);
    if (line[equals + 1] !== '"') throw new Error(`${where}: the value of ${name} is not quoted`);
    let value = '';
    index = equals + 2;
    for (;;) {
      const char = line[index];
      if (char === undefined) throw new Error(`${where}: the value of ${name} is not closed`);
      if (char === '"') break;
      if (char === '\\') {
        const escaped = line[index + 1];
        if (escaped === 'n') value += '\n';
        else if (escaped === '\\' || escaped === '"') value += escaped;
        else throw new Error(`${where}: bad escape in the value of ${name}`);
        index += 2;
      } else {
        value += char;
        index += 1;
      }
    }
    labels[name] = value;
    index += 1;
    if (line[index] === ',') index += 1;
    else if (line[index] !== '}') throw new Error(`${where}: expected ',' or '}' after label ${name}`);
  }
}

export function parsePrometheusText(text: string): PrometheusExposition {
  const families = new Map<string, PrometheusFamily>();
  const helps = new Map<string, string>();
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  lines.forEach((raw, lineIndex) => {
    const where = `line ${lineIndex + 1}`;
    const line = raw.trim();
    if (line === '') return;
    if (line.startsWith('#')) {
      const [, keyword, name, ...rest] = line.split(/\s+/);
      if (keyword === 'HELP') {
        if (!name || !metricName.test(name)) throw new Error(`${where}: HELP names no metric`);
        helps.set(name, rest.join(' '));
        const family = families.get(name);
        if (family) family.help = rest.join(' ');
      } else if (keyword === 'TYPE') {
        const type = rest[0];
        if (!name || !metricName.test(name) || rest.length !== 1 || !type || !types.has(type)) throw new Error(`${where}: malformed TYPE line`);
        if (families.has(name)) throw new Error(`${where}: ${name} is declared twice`);
        families.set(name, { name, type: type as PrometheusFamily['type'], help: helps.get(name), samples: [] });
      }
      return;
    }
    const nameEnd = line.search(/[{\s]/);
    if (nameEnd <= 0) throw new Error(`${where}: no value in '${line}'`);
    const name = line.slice(0, nameEnd);
    if (!metricName.test(name)) throw new Error(`${where}: '${name}' is not a metric name`);
    let labels: Record<string, string> = {};
    let rest = line.slice(nameEnd);
    if (rest.startsWith('{')) {
      const parsed = parseLabels(line, nameEnd, where);
      labels = parsed.labels;
      rest = line.slice(parsed.end);
    }
    const fields = rest.trim().split(/\s+/);
    if (fields.length < 1 || fields.length > 2 || !fields[0]) throw new Error(`${where}: expected a value and an optional timestamp`);
    const value = parseValue(fields[0], where);
    if (fields[1] !== undefined && !/^-?\d+$/.test(fields[1])) throw new Error(`${where}: '${fields[1]}' is not a timestamp`);
    const familyName = familyNameOf(name, families);
    const family = familyName === undefined ? undefined : families.get(familyName);
    if (!family || !suffixes[family.type].includes(name.slice(family.name.length))) throw new Error(`${where}: ${name} belongs to no declared family`);
    if (family.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined) throw new Error(`${where}: a bucket without le`);
    family.samples.push({ name, labels, value });
  });
  return new PrometheusExposition(families);
}
