import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkTopology, TopologyError } from '../src/topology.ts';
import { newTopologySecrets, processSpecs, tlsSettingsOf } from '../src/launcher.ts';

const document = (scheme: 'http' | 'https', extra: Record<string, unknown> = {}) => ({
  servers: [
    { id: 'A', url: `${scheme}://127.0.0.1:7401` },
    { id: 'B', url: `${scheme}://127.0.0.1:7402` },
  ],
  storage_systems: [
    {
      id: 'ss1',
      backend: 'memory',
      devices: [{ id: 'd0', home_cluster: 'c0', capacity_bytes: 1024 }],
      clusters: [
        { id: 'c0', manager_url: `${scheme}://127.0.0.1:7411`, driver_url: `${scheme}://127.0.0.1:7421`, servers: ['A', 'B'] },
        { id: 'c1', manager_url: `${scheme}://127.0.0.1:7412`, driver_url: `${scheme}://127.0.0.1:7422`, servers: ['A', 'B'] },
      ],
    },
  ],
  ...extra,
});

const tls = { cert_file: 'certs/duplex.pem', key_file: 'certs/duplex-key.pem', ca_file: 'certs/ca.pem', client_auth: 'require' };

describe('topology TLS', () => {
  it('resolves the TLS files from the topology file folder and gives every process the same settings', () => {
    const topology = checkTopology(document('https', { tls }), '/etc/duplex');
    assert.deepEqual(tlsSettingsOf(topology), {
      TLS_CERT_FILE: '/etc/duplex/certs/duplex.pem',
      TLS_KEY_FILE: '/etc/duplex/certs/duplex-key.pem',
      TLS_CA_FILE: '/etc/duplex/certs/ca.pem',
      TLS_CLIENT_AUTH: 'require',
    });
    const specs = processSpecs(topology, 'postgres://db', newTopologySecrets(topology, 'dpx_admin-token-of-this-test-0123456789'));
    assert.equal(specs.length, 6);
    for (const spec of specs) assert.equal(spec.env.TLS_CERT_FILE, '/etc/duplex/certs/duplex.pem', spec.name);
  });

  it('refuses https URLs without tls, and http URLs with it', () => {
    assert.throws(() => checkTopology(document('https'), '/etc/duplex'), (error: unknown) => error instanceof TopologyError && /https URLs need tls/.test(error.message));
    assert.throws(() => checkTopology(document('http', { tls }), '/etc/duplex'), (error: unknown) => error instanceof TopologyError && /with tls, every URL is https/.test(error.message));
    assert.deepEqual(tlsSettingsOf(checkTopology(document('http'), '/etc/duplex')), {});
  });
});

describe('topology secrets', () => {
  it('names each secret only for the processes that hold it', () => {
    const topology = checkTopology(document('http'), '/etc/duplex');
    const secrets = newTopologySecrets(topology, 'dpx_admin-token-of-this-test-0123456789');
    assert.notEqual(secrets.clusterTokens['ss1/c0'], secrets.clusterTokens['ss1/c1'], 'each cluster has its own token');
    const specs = new Map(processSpecs(topology, 'postgres://db', secrets).map((spec) => [spec.name, spec.env]));
    const held = (name: string) => Object.keys(specs.get(name) ?? {}).filter((key) => /TOKEN|DATABASE_URL/.test(key)).sort();
    assert.deepEqual(held('server-A'), ['ADMIN_TOKEN', 'DATABASE_URL', 'JOIN_TOKENS', 'SERVICE_TOKEN']);
    assert.deepEqual(held('cluster-manager-ss1-c0'), ['CLUSTER_TOKEN', 'DATABASE_URL', 'JOIN_TOKEN', 'SERVICE_TOKEN']);
    assert.deepEqual(held('driver-ss1-c0'), ['CLUSTER_TOKEN']);
    assert.equal(specs.get('driver-ss1-c0')?.CLUSTER_TOKEN, secrets.clusterTokens['ss1/c0']);
    assert.equal(specs.get('driver-ss1-c1')?.CLUSTER_TOKEN, secrets.clusterTokens['ss1/c1']);
    assert.equal(specs.get('cluster-manager-ss1-c1')?.CLUSTER_TOKEN, secrets.clusterTokens['ss1/c1']);
  });
});
