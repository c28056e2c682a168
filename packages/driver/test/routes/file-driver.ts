import type { TestContext } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.ts';
import { createBackend } from '../../src/lib/backend.ts';
import { provisionFileDevice } from '../../src/lib/file-store.ts';
import { GiB, tempDir } from '../helpers.ts';

/** The driver over a file backend with devices d0 (c0) and d1 (c1) in a fresh directory. */
export async function fileDriver(t: TestContext): Promise<{ app: FastifyInstance; root: string }> {
  const root = await tempDir(t);
  await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB });
  await provisionFileDevice(root, { id: 'd1', home_cluster: 'c1', capacity_bytes: GiB });
  const app = await buildApp({ backend: createBackend({ kind: 'file', deviceRoot: root }), logger: false });
  t.after(() => app.close());
  return { app, root };
}
