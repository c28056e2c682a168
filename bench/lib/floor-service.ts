/**
 * The processes the floors are measured against: the least a service can do for each step
 * of a task's path, with nothing of duplex in it (no logging, validation, leases, history or
 * outbox). Run by bench/lib/floor.ts as real processes:
 *
 *   FLOOR_ROLE=front FLOOR_PORT=… DATABASE_URL=… PEER_URL=…   the routes under load
 *   FLOOR_ROLE=peer  FLOOR_PORT=…                               the other end of the hop
 *
 * front:
 *   POST /hello   answers a small JSON
 *   POST /insert  one durable INSERT (autocommit), then answers 201
 *   POST /tasks   the 1-hop task path: INSERT the task, POST it to the peer (202), UPDATE the
 *                 row to dispatched, answer 202
 * peer:
 *   POST /tasks   answers 202
 *
 * It prints one line, `listening <port>`, once it accepts connections.
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import pg from 'pg';
import { Pool } from 'undici';

// bench/lib/floor.ts creates this table before it starts the front.
const floorTable = 'floor_tasks';

const role = process.env.FLOOR_ROLE;
const port = Number(process.env.FLOOR_PORT ?? '0');
const app = Fastify({ logger: false });
const closers: (() => Promise<unknown>)[] = [() => app.close()];

if (role === 'peer') {
  app.post('/tasks', async (_request, reply) => reply.code(202).send({ accepted: true }));
} else if (role === 'front') {
  const databaseUrl = process.env.DATABASE_URL;
  const peerUrl = process.env.PEER_URL;
  if (!databaseUrl || !peerUrl) throw new Error('the front needs DATABASE_URL and PEER_URL');
  // node-postgres without a query builder: the least a service pays per query. The pool is
  // as large as a duplex server's (DATABASE_POOL_MAX default).
  const db = new pg.Pool({ connectionString: databaseUrl, max: 10, application_name: 'duplex-bench-floor' });
  const peer = new Pool(peerUrl, { connections: 64 });
  closers.push(() => peer.close(), () => db.end());
  const insert = `insert into ${floorTable} (id, state, body) values ($1, 'queued', $2)`;

  app.post('/hello', async () => ({ hello: 'world' }));

  app.post('/insert', async (request, reply) => {
    const id = randomUUID();
    await db.query(insert, [id, JSON.stringify(request.body)]);
    return reply.code(201).send({ id });
  });

  app.post('/tasks', async (request, reply) => {
    const id = randomUUID();
    await db.query(insert, [id, JSON.stringify(request.body)]);
    const response = await peer.request({
      method: 'POST',
      path: '/tasks',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id, task: request.body }),
    });
    await response.body.dump();
    if (response.statusCode !== 202) return reply.code(502).send({ error: `the peer answered ${response.statusCode}` });
    await db.query(`update ${floorTable} set state = 'dispatched', updated_at = now() where id = $1`, [id]);
    return reply.code(202).send({ id, state: 'dispatched' });
  });
} else {
  throw new Error(`FLOOR_ROLE must be front or peer, not '${role ?? ''}'`);
}

const close = async (): Promise<void> => {
  for (const closer of closers) await closer().catch(() => undefined);
  process.exit(0);
};
process.once('SIGTERM', () => void close());
process.once('SIGINT', () => void close());

await app.listen({ host: '127.0.0.1', port });
const address = app.server.address();
process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : port}\n`);
