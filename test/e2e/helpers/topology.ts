import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '@duplex/testkit';
import { stringify } from 'yaml';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const storageSystemId = 'ss1';
export const serverIds = ['A', 'B'] as const;
export const clusterIds = ['c0', 'c1'] as const;
export type ServerId = (typeof serverIds)[number];
export type ClusterId = (typeof clusterIds)[number];

/** The one small device, to run out of capacity on. */
export const smallDevice = 'd3';
export const smallCapacity = 4 * MiB;
export const deviceCapacity = 64 * MiB;

export interface E2eDevice {
  id: string;
  home_cluster: ClusterId;
  capacity_bytes: number;
}

export interface E2eService {
  name: string;
  role: 'server' | 'cluster-manager' | 'driver';
  url: string;
  port: number;
  /** The log file the launcher writes the process's output to. */
  logFile: string;
}

export interface E2eTopology {
  file: string;
  deviceRoot: string;
  logsDir: string;
  devices: E2eDevice[];
  servers: Record<ServerId, E2eService>;
  managers: Record<ClusterId, E2eService>;
  drivers: Record<ClusterId, E2eService>;
  /** Every server, cluster-manager and driver. */
  services: E2eService[];
}

/** Ports the local default topology (and its embedded Postgres) use; another run may hold them. */
const reservedPorts = new Set([7401, 7402, 7411, 7412, 7421, 7422, 54329]);

async function distinctFreePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) {
    const port = await freePort();
    if (!reservedPorts.has(port)) ports.add(port);
  }
  return [...ports];
}

/** d0-d3 have home c0, d4-d7 home c1; d3 is the small one. */
export function e2eDevices(): E2eDevice[] {
  return Array.from({ length: 8 }, (_, index) => ({
    id: `d${index}`,
    home_cluster: index < 4 ? 'c0' : 'c1',
    capacity_bytes: `d${index}` === smallDevice ? smallCapacity : deviceCapacity,
  }));
}

/**
 * Writes `topology.yaml` into dir: servers A and B, storage system ss1 with 8 file devices
 * (4 per home cluster), clusters c0 and c1 each configured for [A, B], on free ports, with the
 * device root and the logs inside dir.
 */
export async function writeTopology(dir: string): Promise<E2eTopology> {
  const [serverA, serverB, managerC0, managerC1, driverC0, driverC1] = (await distinctFreePorts(6)) as [number, number, number, number, number, number];
  const url = (port: number) => `http://127.0.0.1:${port}`;
  const deviceRoot = join(dir, 'devices');
  const logsDir = join(dir, 'logs');
  const service = (name: string, role: E2eService['role'], port: number): E2eService => ({
    name,
    role,
    url: url(port),
    port,
    logFile: join(logsDir, `${name}.log`),
  });
  const servers = { A: service('server-A', 'server', serverA), B: service('server-B', 'server', serverB) };
  const managers = {
    c0: service(`cluster-manager-${storageSystemId}-c0`, 'cluster-manager', managerC0),
    c1: service(`cluster-manager-${storageSystemId}-c1`, 'cluster-manager', managerC1),
  };
  const drivers = {
    c0: service(`driver-${storageSystemId}-c0`, 'driver', driverC0),
    c1: service(`driver-${storageSystemId}-c1`, 'driver', driverC1),
  };
  const devices = e2eDevices();
  const document = {
    servers: serverIds.map((id) => ({ id, url: servers[id].url })),
    storage_systems: [
      {
        id: storageSystemId,
        backend: 'file',
        device_root: deviceRoot,
        devices,
        clusters: clusterIds.map((id) => ({ id, manager_url: managers[id].url, driver_url: drivers[id].url, servers: [...serverIds] })),
      },
    ],
    logs_dir: logsDir,
  };
  const file = join(dir, 'topology.yaml');
  await writeFile(file, stringify(document));
  return {
    file,
    deviceRoot,
    logsDir,
    devices,
    servers,
    managers,
    drivers,
    services: [...Object.values(servers), ...Object.values(managers), ...Object.values(drivers)],
  };
}

export const homeOf = (topology: E2eTopology, deviceId: string): ClusterId => {
  const device = topology.devices.find((candidate) => candidate.id === deviceId);
  if (!device) throw new Error(`no device ${deviceId} in the topology`);
  return device.home_cluster;
};

export const volumesDir = (topology: E2eTopology, deviceId: string): string => join(topology.deviceRoot, deviceId, 'volumes');
export const volumePath = (topology: E2eTopology, deviceId: string, name: string): string => join(volumesDir(topology, deviceId), name);
