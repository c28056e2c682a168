import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TopologyHarness } from '@duplex/harness';
import { freePort, repositoryRoot, testAdminToken } from '@duplex/testkit';

// The `duplex` command line against real processes: what it prints, what it changes, and
// its exit codes.

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function duplex(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', ...args], {
      cwd: repositoryRoot,
      env: { ...process.env, DUPLEX_SERVERS: '', DUPLEX_TOKEN: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('the duplex command line', { timeout: 300_000 }, () => {
  let harness: TopologyHarness;
  let connection: string[];

  before(async () => {
    harness = await TopologyHarness.start();
    connection = ['--server', harness.serverUrl('A'), '--server', harness.serverUrl('B'), '--token', testAdminToken];
  });
  after(async () => harness?.stop());

  it('shows the whole system: clusters and what they own, agents per server, devices', async () => {
    const json = await duplex(['status', '--json', ...connection]);
    assert.equal(json.code, 0, json.stderr);
    const status = JSON.parse(json.stdout) as { storage_systems: { clusters: { id: string; state: string }[]; devices: unknown[] }[]; servers: { url: string; agents: { cluster_id: string }[] }[] };
    assert.deepEqual(status.storage_systems[0]?.clusters.map((cluster) => `${cluster.id}:${cluster.state}`), ['c0:online', 'c1:online']);
    assert.equal(status.storage_systems[0]?.devices.length, 8);
    assert.deepEqual(status.servers.map((server) => server.agents.map((agent) => agent.cluster_id).sort()), [['c0', 'c1'], ['c0', 'c1']]);

    const text = await duplex(['status', ...connection]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^storage system ss1: 8 of 8 devices available/m);
    assert.match(text.stdout, /^c0 +online +1 +d0 d1 d2 d3 /m);
    assert.match(text.stdout, new RegExp(`^${harness.serverUrl('B').replaceAll('.', '\\.')} +ss1/c1 +ss1-c1-B +active`, 'm'));
  });

  it('submits a task, shows its progress to the end, and exits 0 when it succeeded', async () => {
    const run = await duplex(['task', 'submit', 'volume.create', '--device', 'd0', '--name', 'from-cli', '--size', '2MiB', '--wait', '--json', ...connection]);
    assert.equal(run.code, 0, run.stderr);
    const task = JSON.parse(run.stdout) as { id: string; state: string };
    assert.equal(task.state, 'succeeded');
    assert.match(run.stderr, /submitted tsk_\S+ volume\.create on ss1\/d0/);
    assert.match(run.stderr, /: succeeded/);
    assert.equal(statSync(join(harness.deviceRoot, 'd0', 'volumes', 'from-cli')).size, 2 * 1024 * 1024);
    const got = await duplex(['task', 'get', task.id, ...connection]);
    assert.equal(got.code, 0);
    assert.match(got.stdout, /^state +succeeded$/m);
    const listed = await duplex(['task', 'list', '--device', 'd0', '--json', ...connection]);
    assert.ok((JSON.parse(listed.stdout) as { items: { id: string }[] }).items.some((item) => item.id === task.id));
  });

  it('exits 3 when the task it waits for fails, and 1 with the problem when a request is refused', async () => {
    // A file put on the device behind duplex's back: the server accepts the create, the driver refuses it.
    writeFileSync(join(harness.deviceRoot, 'd1', 'volumes', 'made-elsewhere'), 'x');
    const failed = await duplex(['task', 'submit', 'volume.create', '--device', 'd1', '--name', 'made-elsewhere', '--size', '4096', '--wait', ...connection]);
    assert.equal(failed.code, 3, failed.stderr);
    assert.match(failed.stdout, /^state +failed$/m);
    const missing = await duplex(['task', 'get', 'tsk_nothing_here', ...connection]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^duplex: 404 .*urn:duplex:problem:task-not-found/m);
    const notRecovering = await duplex(['cluster', 'failback', 'c0', ...connection]);
    assert.equal(notRecovering.code, 1);
    assert.match(notRecovering.stderr, /409 .*cluster-not-recovering/);
  });

  it('exits 2 for a wrong command line and 4 when no server answers', async () => {
    const usage = await duplex(['task', 'submit', 'volume.create', '--device', 'd0', ...connection]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /volume\.create needs --name/);
    const unknown = await duplex(['--bogus']);
    assert.equal(unknown.code, 2);
    const nobody = await duplex(['status', '--server', `http://127.0.0.1:${await freePort()}`, '--token', testAdminToken]);
    assert.equal(nobody.code, 4);
    assert.match(nobody.stderr, /no server answered/);
  });

  it('administers devices and tokens', async () => {
    const offline = await duplex(['device', 'set-state', 'd3', 'offline', '--reason', 'replacing a fan', '--json', ...connection]);
    assert.equal(offline.code, 0, offline.stderr);
    assert.equal((JSON.parse(offline.stdout) as { state: string }).state, 'offline');
    const back = await duplex(['device', 'set-state', 'd3', 'available', ...connection]);
    assert.equal(back.code, 0, back.stderr);
    assert.match(back.stdout, /ss1\/d3: available/);
    const rescan = await duplex(['device', 'rescan', 'c1', ...connection]);
    assert.equal(rescan.code, 0, rescan.stderr);

    const created = await duplex(['token', 'create', '--name', 'cli-test', '--role', 'viewer', '--json', ...connection]);
    assert.equal(created.code, 0, created.stderr);
    const token = JSON.parse(created.stdout) as { id: string; secret: string };
    const asViewer = await duplex(['task', 'list', '--server', harness.serverUrl('A'), '--token', token.secret]);
    assert.equal(asViewer.code, 0, asViewer.stderr);
    const forbidden = await duplex(['token', 'list', '--server', harness.serverUrl('A'), '--token', token.secret]);
    assert.equal(forbidden.code, 1);
    assert.match(forbidden.stderr, /403/);
    const revoked = await duplex(['token', 'revoke', token.id, ...connection]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const rows: { revoked_at: Date | null }[] = await harness.db('api_tokens').where({ id: token.id });
    assert.ok(rows[0]?.revoked_at instanceof Date);
  });
});
