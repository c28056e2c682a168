import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createDuplexClient, type ClientTls, type DuplexClient } from '@duplex/client';
import { loadTopology } from '../topology.ts';
import { UsageError } from './output.ts';

export interface ConnectionOptions {
  server?: string[];
  token?: string;
  topology?: string;
  ca?: string;
  cert?: string;
  key?: string;
}

export interface Connection {
  /** Every server; calls fail over between them. */
  client: DuplexClient;
  /** One client per server, for what each server knows of its own (its agents). */
  perServer: { url: string; client: DuplexClient }[];
}

const localServers = ['http://127.0.0.1:7401', 'http://127.0.0.1:7402'];

/**
 * Which servers to call and with what token, in order of precedence: --server and --token;
 * DUPLEX_SERVERS (comma-separated) and DUPLEX_TOKEN; the topology file's servers and the
 * admin token `duplex up` keeps; the local topology's two servers.
 */
export function connect(options: ConnectionOptions, env: NodeJS.ProcessEnv = process.env): Connection {
  const topologyPath = resolve(options.topology ?? 'topology.yaml');
  const topology = existsSync(topologyPath) ? loadTopology(topologyPath) : undefined;
  const servers =
    options.server && options.server.length > 0
      ? options.server
      : env.DUPLEX_SERVERS
        ? env.DUPLEX_SERVERS.split(',').map((url) => url.trim()).filter(Boolean)
        : (topology?.servers.map((server) => server.url) ?? localServers);
  for (const url of servers) {
    if (!/^https?:\/\/[^/]+\/?$/.test(url)) throw new UsageError(`'${url}' is not a server URL (http://host:port)`);
  }
  const tokenFile = topology?.admin_token_file ?? resolve('.duplex/admin-token');
  const token = options.token ?? env.DUPLEX_TOKEN ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : undefined);
  const tls: ClientTls = {};
  if (options.ca) tls.ca = readFileSync(options.ca);
  if (options.cert) tls.cert = readFileSync(options.cert);
  if (options.key) tls.key = readFileSync(options.key);
  const common = { token, ...(Object.keys(tls).length > 0 ? { tls } : {}) };
  return {
    client: createDuplexClient({ servers, ...common }),
    perServer: servers.map((url) => ({ url, client: createDuplexClient({ servers: [url], rounds: 1, ...common }) })),
  };
}
