/**
 * Floor benchmark: what this machine sustains right now for the three reference paths of
 * issue 5 (fastify hello POST; a POST doing one durable INSERT; the minimal 1-hop task path),
 * each with a closed-loop load for a fixed time. The other load benchmarks measure the 1-hop
 * floor again in their own run (bench/lib/floor.ts) and divide by it.
 *
 *   node --import tsx bench/floor.ts            # 10 s per floor after a 2 s warm-up
 *   node --import tsx bench/floor.ts --smoke    # CI: 2 s per floor
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { floorIds, floorsTable, measureFloors, postgresLine, type FloorRun } from './lib/floor.ts';
import { listFlag, parseLoadFlags, positiveNumber } from './lib/load-options.ts';
import { startOwnPostgres } from './lib/postgres.ts';
import { BenchSession, log } from './lib/session.ts';

const usage = `usage: node --import tsx bench/floor.ts [--smoke] [--duration-s S] [--warmup-s S] [--connections N] [--only hello,insert,one-hop] [--results-dir DIR]

  --smoke            a short run that checks the benchmark works (2 s per floor, 0.5 s warm-up)
  --duration-s S     measured seconds per floor (default 10; 2 with --smoke)
  --warmup-s S       unmeasured seconds of the same load before each floor (default 2; 0.5 with --smoke)
  --connections N    concurrent connections of the closed loop (default 64)
  --only LIST        some of: ${floorIds.join(', ')}
  --results-dir DIR  where the JSON goes (default: bench/results)
  --strict           accepted for symmetry with the other benchmarks; the floors have no target`;

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const flags = parseLoadFlags(process.argv.slice(2), usage, join(benchDir, 'results'), {
  'duration-s': { type: 'string' },
  'warmup-s': { type: 'string' },
  connections: { type: 'string' },
  only: { type: 'string' },
});
const durationMs = positiveNumber(flags, 'duration-s', flags.smoke ? 2 : 10, usage) * 1_000;
const warmupMs = positiveNumber(flags, 'warmup-s', flags.smoke ? 0.5 : 2, usage) * 1_000;
const connections = positiveNumber(flags, 'connections', 64, usage, true);
const floors = listFlag(flags, 'only', floorIds, floorIds, usage);

const session = new BenchSession('floor');
log(`floor benchmark ${session.runId}: ${floors.join(', ')}; ${durationMs / 1_000} s each after ${warmupMs / 1_000} s warm-up; ${connections} connections`);

let run: FloorRun | undefined;
let aborted: string | null = null;
try {
  const bootStart = Date.now();
  // A Postgres of the run's own, the same embedded Postgres the harness runs for the other benchmarks.
  const postgres = await startOwnPostgres(session.marker);
  log(`Postgres up in ${Date.now() - bootStart} ms`);
  try {
    run = await measureFloors({ adminUrl: postgres.adminUrl, durationMs, warmupMs, connections, floors, log });
  } finally {
    await postgres.stop();
  }
} catch (error) {
  aborted = `the benchmark stopped: ${(error as Error).message}`;
  log(`${aborted}\n${(error as Error).stack ?? ''}`);
}

const errors = run?.figures.reduce((sum, figure) => sum + figure.errors, 0) ?? 0;
console.log(`## Floors (${connections} connections, closed loop, ${durationMs / 1_000} s each after ${warmupMs / 1_000} s warm-up)\n`);
if (aborted) console.log(`**The run was cut short: ${aborted}.**\n`);
if (run) {
  console.log(`${postgresLine(run.postgres)}.\n`);
  console.log(floorsTable(run.figures));
  console.log('');
}
const file = session.writeResults(flags.resultsDir, {
  smoke: flags.smoke,
  duration_ms: durationMs,
  warmup_ms: warmupMs,
  connections,
  aborted,
  postgres: run?.postgres ?? null,
  floors: run?.figures ?? [],
});
console.log(`JSON: ${file}`);
if (errors > 0) console.log(`**${errors} request(s) of the floors failed.**`);
await session.exit(aborted || errors > 0 ? 1 : 0);
