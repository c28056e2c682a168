import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';

const schema = JSON.parse(readFileSync(new URL('../topology.schema.json', import.meta.url), 'utf8')) as object;

export interface TopologyServer {
  id: string;
  url: string;
}
export interface TopologyDevice {
  id: string;
  home_cluster: string;
  capacity_bytes: number;
}
export interface TopologyCluster {
  id: string;
  manager_url: string;
  driver_url: string;
  servers: string[];
}
export interface TopologyStorageSystem {
  id: string;
  backend: 'file' | 'memory';
  device_root?: string;
  devices: TopologyDevice[];
  clusters: TopologyCluster[];
}
/** The TLS every process of the topology serves and calls with. */
export interface TopologyTls {
  cert_file: string;
  key_file: string;
  ca_file?: string;
  client_auth?: 'none' | 'require';
}
export interface Topology {
  servers: TopologyServer[];
  tls?: TopologyTls;
  storage_systems: TopologyStorageSystem[];
  postgres: { port: number; data_dir: string };
  logs_dir: string;
  admin_token_file: string;
  restart_delay_ms: number;
}

export class TopologyError extends Error {
  override name = 'TopologyError';
}

/** Reads and checks a topology file; relative paths in it become absolute, from the file's folder. */
export function loadTopology(path: string): Topology {
  let document: unknown;
  try {
    document = parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new TopologyError(`cannot read the topology file ${path}: ${(error as Error).message}`);
  }
  return checkTopology(document, dirname(resolve(path)));
}

export function checkTopology(document: unknown, baseDirectory: string): Topology {
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
  const validate = ajv.compile<Topology>(schema);
  if (!validate(document)) {
    const problems = (validate.errors ?? []).map((error) => `${error.instancePath || '/'} ${error.message ?? 'is invalid'}`);
    throw new TopologyError(`the topology does not match its schema: ${problems.join('; ')}`);
  }
  const topology: Topology = {
    ...document,
    postgres: { port: document.postgres?.port ?? 54329, data_dir: resolve(baseDirectory, document.postgres?.data_dir ?? '.duplex/postgres') },
    logs_dir: resolve(baseDirectory, document.logs_dir ?? '.duplex/logs'),
    admin_token_file: resolve(baseDirectory, document.admin_token_file ?? '.duplex/admin-token'),
    restart_delay_ms: document.restart_delay_ms ?? 2000,
    ...(document.tls
      ? {
          tls: {
            ...document.tls,
            cert_file: resolve(baseDirectory, document.tls.cert_file),
            key_file: resolve(baseDirectory, document.tls.key_file),
            ...(document.tls.ca_file ? { ca_file: resolve(baseDirectory, document.tls.ca_file) } : {}),
          },
        }
      : {}),
    storage_systems: document.storage_systems.map((system) => ({
      ...system,
      device_root: resolve(baseDirectory, system.device_root ?? `.duplex/devices/${system.id}`),
    })),
  };
  const problems = crossCheck(topology);
  if (problems.length > 0) throw new TopologyError(`the topology is inconsistent: ${problems.join('; ')}`);
  return topology;
}

/** References the schema cannot check: every id unique, every named server and cluster defined, one URL scheme. */
export function crossCheck(topology: Topology): string[] {
  const problems: string[] = [];
  const duplicates = (ids: string[]) => ids.filter((id, index) => ids.indexOf(id) !== index);
  const serverIds = topology.servers.map((server) => server.id);
  for (const id of duplicates(serverIds)) problems.push(`server ${id} is defined twice`);
  for (const id of duplicates(topology.storage_systems.map((system) => system.id))) problems.push(`storage system ${id} is defined twice`);
  const urls = [
    ...topology.servers.map((server) => server.url),
    ...topology.storage_systems.flatMap((system) => system.clusters.flatMap((cluster) => [cluster.manager_url, cluster.driver_url])),
  ];
  for (const host of duplicates(urls.map((url) => new URL(url).host))) problems.push(`address ${host} is used by two processes`);
  for (const system of topology.storage_systems) {
    const clusterIds = system.clusters.map((cluster) => cluster.id);
    for (const id of duplicates(clusterIds)) problems.push(`${system.id}: cluster ${id} is defined twice`);
    for (const id of duplicates(system.devices.map((device) => device.id))) problems.push(`${system.id}: device ${id} is defined twice`);
    for (const device of system.devices) {
      if (!clusterIds.includes(device.home_cluster)) problems.push(`${system.id}: device ${device.id} names an unknown home cluster ${device.home_cluster}`);
    }
    for (const cluster of system.clusters) {
      for (const server of cluster.servers) {
        if (!serverIds.includes(server)) problems.push(`${system.id}/${cluster.id}: server ${server} is not defined`);
      }
    }
  }
  // One scheme for every URL: https exactly when the processes serve TLS.
  const scheme = topology.tls ? 'https:' : 'http:';
  const otherScheme = urls.filter((url) => !url.startsWith(scheme));
  if (otherScheme.length > 0) problems.push(`${topology.tls ? 'with tls, every URL is https' : 'https URLs need tls'}: ${otherScheme.join(', ')}`);
  return problems;
}

export const portOf = (url: string): number => Number(new URL(url).port);
export const hostOf = (url: string): string => new URL(url).hostname;
