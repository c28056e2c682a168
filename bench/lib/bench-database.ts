/**
 * A fresh, migrated database for a benchmark that starts its services itself: on the Postgres
 * at DATABASE_URL when it is set (as the tests use it), otherwise on an embedded Postgres of
 * the run's own, with its data in the run's private folder.
 */
import type { Database, EmbeddedPostgresServer } from '@duplex/shared';
import { createTestDatabase } from '@duplex/testkit';
import { postgresSettings, startOwnPostgres, type PostgresSettings } from './postgres.ts';

export interface BenchDatabase {
  url: string;
  db: Database;
  /** `DATABASE_URL (host:port)` or `embedded (port)`. */
  source: string;
  settings: PostgresSettings;
  close(): Promise<void>;
}

export async function openBenchDatabase(folder: string, prefix: string): Promise<BenchDatabase> {
  let embedded: EmbeddedPostgresServer | undefined;
  if (!process.env.DATABASE_URL) {
    embedded = await startOwnPostgres(folder);
    // createTestDatabase makes its database next to the one DATABASE_URL names.
    process.env.DATABASE_URL = embedded.adminUrl;
  }
  const source = embedded ? `embedded (port ${new URL(embedded.adminUrl).port})` : `DATABASE_URL (${new URL(process.env.DATABASE_URL!).host})`;
  const database = await createTestDatabase(prefix);
  return {
    url: database.url,
    db: database.db,
    source,
    settings: await postgresSettings(database.db),
    async close() {
      await database.drop().catch(() => undefined);
      await embedded?.stop().catch(() => undefined);
    },
  };
}
