/**
 * The floor of the heartbeat benchmark: a bare Fastify process that answers the heartbeat
 * route with a fixed lease and does nothing else (no validation, no database, no logging).
 * Whatever the duplex server spends beyond this on a heartbeat is its own work.
 *
 *   HEARTBEAT_FLOOR_PORT=7999 node --import tsx bench/lib/heartbeat-floor-server.ts
 */
import Fastify from 'fastify';

const port = Number(process.env.HEARTBEAT_FLOOR_PORT ?? '0');
const leaseTtlMs = 3_000;

const app = Fastify({ logger: false });
app.post<{ Params: { id: string }; Body: { incarnation: number } }>('/v1/agents/:id/heartbeats', async () => ({
  lease_expires_at: new Date(Date.now() + leaseTtlMs).toISOString(),
  inventory_version: null,
}));
app.get('/healthz', async () => ({ status: 'ok' }));

process.once('SIGTERM', () => {
  void app.close().then(() => process.exit(0));
});
await app.listen({ host: '127.0.0.1', port });
