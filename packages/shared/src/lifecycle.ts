import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import { ConfigError } from './config.ts';

/**
 * Listens, and closes the app gracefully on SIGINT/SIGTERM. A bad configuration or a
 * failed start ends the process with one clear line and exit code 1.
 */
export async function runService(
  name: string,
  start: () => Promise<{ app: FastifyInstance; host: string; port: number; afterListen?: (address: string) => Promise<void> }>,
): Promise<void> {
  try {
    const { app, host, port, afterListen } = await start();
    closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
      if (err) app.log.error({ err }, 'closing after an uncaught error');
      else app.log.info({ signal }, 'closing');
      await app.close();
    });
    const address = await app.listen({ host, port });
    if (afterListen) await afterListen(address);
  } catch (error) {
    const reason = error instanceof ConfigError ? error.message : `failed to start: ${(error as Error).message}`;
    process.stderr.write(`${name}: ${reason}\n`);
    process.exit(1);
  }
}
