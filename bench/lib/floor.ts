/**
 * The floors duplex's figures are divided by, measured in the same run on the same machine
 * (issue 5): what fastify, one durable INSERT and the minimal 1-hop task path sustain here,
 * now. The processes under load are real (bench/lib/floor-service.ts); the load is closed-loop
 * (autocannon: each connection sends its next request when the last is answered) for a fixed
 * time, after an unmeasured warm-up of the same kind.
 */
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { freePort, startProcess, type ServiceProcess } from '@duplex/testkit';
import autocannon from 'autocannon';
import { Pool } from 'undici';
import { createScratchDatabase, postgresSettings, type PostgresSettings } from './postgres.ts';

export const floorIds = ['hello', 'insert', 'one-hop'] as const;
export type FloorId = (typeof floorIds)[number];

export const floorRoutes: Record<FloorId, { path: string; status: number; title: string }> = {
  hello: { path: '/hello', status: 200, title: 'fastify hello POST' },
  insert: { path: '/insert', status: 201, title: 'fastify POST + one durable INSERT' },
  'one-hop': { path: '/tasks', status: 202, title: '1-hop task path: POST, INSERT, undici POST to a 2nd process (202), UPDATE, 202' },
};

/** What the issue measured on this kind of machine; printed for orientation, never divided by. */
export const issueFigures: Record<FloorId, string> = {
  hello: '65k req/s',
  insert: '10.2k req/s, p99 9 ms',
  'one-hop': '4,256 req/s, p99 19 ms',
};

export interface FloorFigure {
  floor: FloorId;
  title: string;
  connections: number;
  /** Measured seconds (autocannon's own clock). */
  duration_s: number;
  /** Requests answered with the route's success status. */
  ok: number;
  /** Transport errors (timeouts among them) and other statuses: a floor with any is not a floor. */
  errors: number;
  /** `ok` per second: the figure. */
  req_per_s: number;
  /** autocannon's latency histogram has 1 ms resolution. */
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  load_avg_1m: number;
}

export interface FloorRun {
  figures: FloorFigure[];
  postgres: PostgresSettings;
}

export interface FloorOptions {
  /** A superuser URL of the Postgres to use; a scratch database is created in it and dropped. */
  adminUrl: string;
  durationMs: number;
  warmupMs: number;
  /** Concurrent connections of the closed loop. */
  connections: number;
  floors?: readonly FloorId[];
  log?: (line: string) => void;
}

// A task request of the same shape and size as the ones duplex is sent.
export const floorRequestBody = JSON.stringify({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'floor-volume', size_bytes: 4096 } });

const serviceEntry = fileURLToPath(new URL('./floor-service.ts', import.meta.url));

async function startFloorProcess(name: string, env: Record<string, string>): Promise<{ process: ServiceProcess; url: string }> {
  const port = await freePort();
  const started = startProcess(name, serviceEntry, { ...env, FLOOR_PORT: String(port) });
  // A loaded machine can take tens of seconds to start a tsx process.
  const deadline = Date.now() + 90_000;
  while (!started.output().includes('listening')) {
    if (started.child.exitCode !== null || started.child.signalCode !== null || Date.now() > deadline) {
      await started.stop('SIGKILL');
      throw new Error(`the floor's ${name} process did not start: ${started.output().slice(-2_000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { process: started, url: `http://127.0.0.1:${port}` };
}

async function load(url: string, connections: number, durationMs: number): Promise<autocannon.Result> {
  return autocannon({
    url,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: floorRequestBody,
    connections,
    duration: durationMs / 1_000,
  });
}

async function measureOne(floor: FloorId, baseUrl: string, options: FloorOptions): Promise<FloorFigure> {
  const route = floorRoutes[floor];
  const url = `${baseUrl}${route.path}`;
  if (options.warmupMs > 0) await load(url, options.connections, options.warmupMs);
  const result = await load(url, options.connections, options.durationMs);
  const statusCounts = result.statusCodeStats as unknown as Record<string, { count: number } | undefined>;
  const ok = statusCounts[String(route.status)]?.count ?? 0;
  const answered = Object.values(statusCounts).reduce((sum, entry) => sum + (entry?.count ?? 0), 0);
  return {
    floor,
    title: route.title,
    connections: options.connections,
    duration_s: result.duration,
    ok,
    // autocannon counts a timeout among its errors too.
    errors: result.errors + (answered - ok),
    req_per_s: ok / result.duration,
    p50_ms: result.latency.p50,
    p99_ms: result.latency.p99,
    max_ms: result.latency.max,
    load_avg_1m: loadavg()[0] ?? 0,
  };
}

export interface FloorServices {
  /** The front's base URL; its routes are in `floorRoutes`. */
  url: string;
  postgres: PostgresSettings;
  stop(): Promise<void>;
}

/** The floor's two processes and their scratch database in the Postgres at `adminUrl`, until stop(). */
export async function startFloorServices(adminUrl: string): Promise<FloorServices> {
  const scratch = await createScratchDatabase(adminUrl, 'floor');
  const started: ServiceProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const child of started.reverse()) await child.stop();
    await scratch.drop();
  };
  try {
    await scratch.db.schema.createTable('floor_tasks', (table) => {
      table.text('id').primary();
      table.text('state').notNullable();
      table.jsonb('body').notNullable();
      table.timestamp('created_at', { useTz: true }).notNullable().defaultTo(scratch.db.fn.now());
      table.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(scratch.db.fn.now());
    });
    const postgres = await postgresSettings(scratch.db);
    const peer = await startFloorProcess('floor-peer', { FLOOR_ROLE: 'peer' });
    started.push(peer.process);
    const front = await startFloorProcess('floor-front', { FLOOR_ROLE: 'front', DATABASE_URL: scratch.url, PEER_URL: peer.url });
    started.push(front.process);
    return { url: front.url, postgres, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * Measures the floors, one after the other, on processes of their own and a scratch
 * database in the Postgres at `adminUrl`; everything it started is gone when it returns.
 */
export async function measureFloors(options: FloorOptions): Promise<FloorRun> {
  const floors = options.floors ?? floorIds;
  const services = await startFloorServices(options.adminUrl);
  try {
    const figures: FloorFigure[] = [];
    for (const floor of floors) {
      options.log?.(`floor ${floor}: ${options.connections} connections, ${options.warmupMs} ms warm-up, ${options.durationMs} ms measured`);
      const figure = await measureOne(floor, services.url, options);
      options.log?.(`floor ${floor}: ${Math.round(figure.req_per_s)} req/s, p99 ${figure.p99_ms} ms, ${figure.errors} errors`);
      figures.push(figure);
    }
    return { figures, postgres: services.postgres };
  } finally {
    await services.stop();
  }
}

/** The 1-hop floor alone, for a benchmark that divides its own figure by it in the same run. */
export async function measureOneHopFloor(options: Omit<FloorOptions, 'floors'>): Promise<{ figure: FloorFigure; postgres: PostgresSettings }> {
  const run = await measureFloors({ ...options, floors: ['one-hop'] });
  const figure = run.figures[0];
  if (!figure) throw new Error('the 1-hop floor gave no figure');
  return { figure, postgres: run.postgres };
}

export function floorsTable(figures: readonly FloorFigure[]): string {
  const rows = figures.map(
    (f) =>
      `| ${f.title} | ${f.connections} | ${Math.round(f.req_per_s).toLocaleString('en-US')} | ${f.p50_ms} ms | ${f.p99_ms} ms | ${f.max_ms} ms | ${f.ok.toLocaleString('en-US')} | ${f.errors} | ${f.load_avg_1m.toFixed(2)} | ${issueFigures[f.floor]} |`,
  );
  return [
    '| floor | connections | req/s | p50 | p99 | max | answered | errors | load avg (1 min) | issue, reference machine |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows,
  ].join('\n');
}

export function postgresLine(settings: PostgresSettings): string {
  return `Postgres ${settings.server_version}: fsync ${settings.fsync}, synchronous_commit ${settings.synchronous_commit}, wal_sync_method ${settings.wal_sync_method}`;
}

/** Requests to the floor's routes one at a time, for a generator of its own (the open loop). */
export class FloorClient {
  private readonly pool: Pool;

  constructor(url: string, connections: number) {
    this.pool = new Pool(url, { connections, keepAliveTimeout: 30_000 });
  }

  /** One request to the floor's route; ok when it is answered with the route's success status. */
  async send(floor: FloorId, signal?: AbortSignal): Promise<{ ok: boolean; status: number | null; error: string | null }> {
    const route = floorRoutes[floor];
    try {
      const response = await this.pool.request({
        method: 'POST',
        path: route.path,
        headers: { 'content-type': 'application/json' },
        body: floorRequestBody,
        ...(signal ? { signal } : {}),
      });
      await response.body.dump();
      const status = response.statusCode;
      return status === route.status ? { ok: true, status, error: null } : { ok: false, status, error: `answered ${status}` };
    } catch (error) {
      return { ok: false, status: null, error: (error as Error).message };
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
