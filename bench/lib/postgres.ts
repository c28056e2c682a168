/**
 * Postgres for the load benchmarks: a scratch database created and dropped in a running
 * Postgres (the floors run in the topology's own Postgres, so both sides of a ratio write to
 * the same server), and the durability settings that decide what a commit costs.
 */
import { join } from 'node:path';
import { createDatabase, startEmbeddedPostgres, type Database, type EmbeddedPostgresServer } from '@duplex/shared';
import { createScratchDatabase as createTestkitScratchDatabase, freePort, type TestDatabase } from '@duplex/testkit';

export type ScratchDatabase = TestDatabase;

/** A new, empty database in the Postgres at `adminUrl`; drop() removes it. */
export async function createScratchDatabase(adminUrl: string, prefix: string, poolMax = 4): Promise<ScratchDatabase> {
  return createTestkitScratchDatabase(adminUrl, prefix, { poolMax, migrate: false, applicationName: 'duplex-bench' });
}

/** What a commit costs depends on these; the run prints them beside its figures. */
export interface PostgresSettings {
  server_version: string;
  fsync: string;
  synchronous_commit: string;
  wal_sync_method: string;
}

export async function postgresSettings(db: Database): Promise<PostgresSettings> {
  const read = async (name: string): Promise<string> => {
    const { rows } = await db.raw<{ rows: Record<string, string>[] }>(`show ${name}`);
    return Object.values(rows[0] ?? {})[0] ?? '?';
  };
  return {
    server_version: await read('server_version'),
    fsync: await read('fsync'),
    synchronous_commit: await read('synchronous_commit'),
    wal_sync_method: await read('wal_sync_method'),
  };
}

/**
 * An embedded Postgres of the run's own, the same package and defaults as the harness's
 * (`ownPostgres`), with its data under `directory` (the run's private TMPDIR).
 */
export async function startOwnPostgres(directory: string): Promise<EmbeddedPostgresServer> {
  return startEmbeddedPostgres({ dataDir: join(directory, 'postgres'), port: await freePort() });
}
