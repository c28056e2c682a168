import { randomBytes } from 'node:crypto';
import { createDatabase, migrateToLatest, type Database } from '@duplex/shared';

/**
 * The Postgres the tests run against: DATABASE_URL when set (CI sets it to the machine's
 * Postgres), otherwise the embedded one that scripts/run-tests.mjs started.
 */
export function testDatabaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set: run the tests through `pnpm test`');
  return url;
}

export interface TestDatabase {
  url: string;
  db: Database;
  drop(): Promise<void>;
}

/** A new, migrated database for one test file; drop() removes it. */
export async function createTestDatabase(prefix = 'duplex_test'): Promise<TestDatabase> {
  return createScratchDatabase(testDatabaseUrl(), prefix, { poolMax: 10, migrate: true });
}

/** A new database in the Postgres at `adminUrl` (migrated when asked); drop() removes it. */
export async function createScratchDatabase(
  adminUrl: string,
  prefix: string,
  options: { poolMax: number; migrate: boolean; applicationName?: string },
): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  const admin = createDatabase(adminUrl, { poolMax: 1, applicationName: options.applicationName });
  await admin.raw(`create database "${name}"`);
  const url = withDatabase(adminUrl, name);
  const db = createDatabase(url, { poolMax: options.poolMax, applicationName: options.applicationName });
  if (options.migrate) await migrateToLatest(db);
  return {
    url,
    db,
    async drop() {
      await db.destroy();
      await admin.raw(`drop database if exists "${name}" with (force)`);
      await admin.destroy();
    },
  };
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
