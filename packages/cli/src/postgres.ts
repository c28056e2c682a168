import { startEmbeddedPostgres } from '@duplex/shared';
import pg from 'pg';

export interface RunningPostgres {
  url: string;
  stop(): Promise<void>;
}

/** The embedded Postgres of `duplex up`, with a `duplex` database. */
export async function startLocalPostgres(dataDir: string, port: number, log: (line: string) => void): Promise<RunningPostgres> {
  const server = await startEmbeddedPostgres({ dataDir, port, onCreate: () => log(`creating the embedded Postgres in ${dataDir}`) });
  const client = new pg.Client({ connectionString: server.adminUrl });
  await client.connect();
  const { rowCount } = await client.query(`select 1 from pg_database where datname = 'duplex'`);
  if (!rowCount) await client.query('create database duplex');
  await client.end();
  return { url: `postgres://postgres:postgres@127.0.0.1:${port}/duplex`, stop: () => server.stop() };
}
