import type { TestContext } from 'node:test';
import { injectWithToken, testClusterToken } from '@duplex/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.ts';
import { createBackend } from '../../src/lib/backend.ts';
import { provisionFileDevice } from '../../src/lib/file-store.ts';
import { GiB, tempDir } from '../helpers.ts';

/**
 * The driver of cluster c0 over a file backend with devices d0 (c0) and d1 (c1) in a fresh
 * directory; `app.inject` sends c0's token unless a request names its own `authorization`.
 */
export async function fileDriver(t: TestContext): Promise<{ app: FastifyInstance; root: string }> {
  const root = await tempDir(t);
  await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB });
  await provisionFileDevice(root, { id: 'd1', home_cluster: 'c1', capacity_bytes: GiB });
  const app = await buildApp({ backend: createBackend({ kind: 'file', deviceRoot: root }), clusterToken: testClusterToken('c0'), logger: false });
  t.after(() => app.close());
  return { app: injectWithToken(app, testClusterToken('c0')), root };
}
