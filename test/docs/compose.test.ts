import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { agentConfigSchema } from '@duplex/agent';
import { checkTopology } from '@duplex/cli';
import { clusterManagerConfigSchema } from '@duplex/cluster-manager';
import { driverConfigSchema } from '@duplex/driver';
import { serverConfigSchema } from '@duplex/server';
import { loadConfig, type ConfigSchema } from '@duplex/shared';
import { repositoryRoot } from '@duplex/testkit';
import { parse } from 'yaml';

// No Docker engine runs here, so docker-compose.yml is checked against what the services
// themselves accept: every variable known to the service's configuration schema and valid,
// every URL naming a service of the file at the port it listens on, and the prepare step's
// topology in step with the services.

interface ComposeService {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string | number>;
  depends_on?: string[] | Record<string, unknown>;
  ports?: string[];
  deploy?: { placement?: { constraints?: string[] } };
}

/** The values the secrets are given here, as a user's shell or .env file would. */
const shell: Record<string, string> = {
  DUPLEX_ADMIN_TOKEN: 'dpx_compose-admin-token-0123456789abcdef',
  DUPLEX_JOIN_TOKEN: 'dpj_compose-join-token-0123456789abcdef',
  DUPLEX_SERVICE_TOKEN: 'dps_compose-service-token-0123456789abcdef',
  DUPLEX_C0_TOKEN: 'dpc_compose-c0-token-0123456789abcdef',
  DUPLEX_C1_TOKEN: 'dpc_compose-c1-token-0123456789abcdef',
};

/** Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME:?error}. */
function interpolate(text: string, env: Record<string, string>): string {
  return text.replace(/\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}/g, (_match, name: string, kind: string | undefined, rest: string | undefined) => {
    const value = env[name];
    if (value !== undefined && value !== '') return value;
    if (kind === '-') return rest ?? '';
    if (kind === '?') throw new Error(`compose would stop: ${name}: ${rest}`);
    return '';
  });
}

const raw = readFileSync(`${repositoryRoot}docker-compose.yml`, 'utf8');
const compose = parse(interpolate(raw, shell), { merge: true }) as { services: Record<string, ComposeService>; volumes: Record<string, unknown> };
const services = compose.services;

const schemas: Record<string, ConfigSchema> = {
  'packages/server/src/server.ts': serverConfigSchema,
  'packages/cluster-manager/src/server.ts': clusterManagerConfigSchema,
  'packages/driver/src/server.ts': driverConfigSchema,
};
/** Variables every process reads besides its schema's. */
const common = new Set(['LOG_LEVEL', 'NODE_ENV']);

const duplexServices = Object.entries(services).filter(([, service]) => service.build !== undefined);
const listensOn = (service: ComposeService): number | undefined => {
  const env = service.environment ?? {};
  const port = env.SERVER_PORT ?? env.CM_PORT ?? env.DRIVER_PORT;
  return port === undefined ? undefined : Number(port);
};

describe('docker-compose.yml', () => {
  it('refuses to start without each secret', () => {
    for (const name of Object.keys(shell)) {
      assert.throws(() => interpolate(raw, { ...shell, [name]: '' }), new RegExp(name), name);
    }
  });

  it('builds every duplex service from this repository', () => {
    assert.ok(existsSync(`${repositoryRoot}Dockerfile`));
    assert.ok(duplexServices.length >= 7);
    for (const [name, service] of duplexServices) {
      assert.equal(service.build, '.', name);
      assert.match(service.image ?? '', /duplex/, name);
    }
  });

  for (const [name, service] of duplexServices) {
    const entry = (service.command ?? []).find((part) => part in schemas);
    if (!entry) continue;
    it(`gives ${name} a configuration its service accepts, every variable known`, () => {
      const env = Object.fromEntries(Object.entries(service.environment ?? {}).map(([key, value]) => [key, String(value)]));
      const schema = schemas[entry]!;
      const unknown = Object.keys(env).filter((key) => !(key in schema) && !common.has(key));
      assert.deepEqual(unknown, [], `${name} sets variables its service does not read`);
      assert.doesNotThrow(() => loadConfig(schema, env), `${name}'s configuration`);
    });
  }

  it('points every URL at a service of the file, at the port that service listens on', () => {
    const urls: [string, string][] = [];
    for (const [name, service] of duplexServices) {
      for (const [key, value] of Object.entries(service.environment ?? {})) {
        for (const url of String(value).match(/https?:\/\/[^,\s]+/g) ?? []) urls.push([`${name} ${key}`, url]);
      }
    }
    assert.equal(urls.length, 10);
    for (const [where, text] of urls) {
      const url = new URL(text);
      if (url.protocol === 'postgres:') continue;
      const target = services[url.hostname];
      assert.ok(target, `${where}: ${text} names no service`);
      assert.equal(Number(url.port), listensOn(target), `${where}: ${text} is not where ${url.hostname} listens`);
    }
    const database = new URL(String(services['server-a']?.environment?.DATABASE_URL));
    assert.ok(services[database.hostname]?.image?.startsWith('postgres:'));
  });

  it("gives the agents, which run in their cluster-manager's container, that container's name as their host", () => {
    for (const [name, service] of duplexServices.filter(([, candidate]) => candidate.command?.includes('packages/cluster-manager/src/server.ts'))) {
      const env = service.environment ?? {};
      assert.equal(env.AGENT_PUBLIC_HOST, name);
      assert.equal(env.AGENT_HOST, '0.0.0.0');
      assert.equal(new URL(String(env.CM_PUBLIC_URL)).hostname, name);
    }
  });

  it('gives each secret only to the services that use it; each cluster its own token', () => {
    const holders = (value: string) => duplexServices.filter(([, service]) => Object.values(service.environment ?? {}).some((candidate) => String(candidate).includes(value))).map(([name]) => name).sort();
    assert.deepEqual(holders(shell.DUPLEX_SERVICE_TOKEN!), ['cm-c0', 'cm-c1', 'server-a', 'server-b']);
    assert.deepEqual(holders(shell.DUPLEX_C0_TOKEN!), ['cm-c0', 'driver-c0']);
    assert.deepEqual(holders(shell.DUPLEX_C1_TOKEN!), ['cm-c1', 'driver-c1']);
    assert.deepEqual(holders(shell.DUPLEX_ADMIN_TOKEN!), ['server-a', 'server-b']);
    assert.deepEqual(holders('postgres://'), ['cm-c0', 'cm-c1', 'prepare', 'server-a', 'server-b']);
  });

  it('names only defined services as dependencies, and places every service on a labelled host', () => {
    for (const [name, service] of Object.entries(services)) {
      const dependencies = Array.isArray(service.depends_on) ? service.depends_on : Object.keys(service.depends_on ?? {});
      for (const dependency of dependencies) assert.ok(services[dependency], `${name} depends on an undefined ${dependency}`);
      assert.match(service.deploy?.placement?.constraints?.join(' ') ?? '', /node\.labels\.duplex\.host == /, `${name} has no placement`);
    }
  });

  it("matches the prepare step's topology: the same servers, cluster-managers and drivers", () => {
    const topology = checkTopology(parse(readFileSync(`${repositoryRoot}topology.compose.yaml`, 'utf8')), '/');
    const hostPort = (url: string) => `${new URL(url).hostname}:${new URL(url).port}`;
    const fromTopology = [
      ...topology.servers.map((server) => hostPort(server.url)),
      ...topology.storage_systems.flatMap((system) => system.clusters.flatMap((cluster) => [hostPort(cluster.manager_url), hostPort(cluster.driver_url)])),
    ].sort();
    const fromCompose = duplexServices.filter(([, service]) => listensOn(service) !== undefined).map(([name, service]) => `${name}:${listensOn(service)}`).sort();
    assert.deepEqual(fromTopology, fromCompose);
    const driverRoots = duplexServices.map(([, service]) => service.environment?.DRIVER_DEVICE_ROOT).filter(Boolean);
    assert.deepEqual([...new Set(driverRoots)], [topology.storage_systems[0]?.device_root]);
    assert.ok('devices' in compose.volumes);
  });
});
