import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { JsonClient, UpstreamError, type ClientTls } from '@duplex/shared';
import { bearer, freePort, makeTestCertificates, startProcess, testClusterToken, waitFor, type ServiceProcess, type TestCertificates } from '@duplex/testkit';

const entry = 'packages/driver/src/server.ts';
const token = testClusterToken('c0');

/** One call to the driver with the given TLS: its status, or the error that stopped it. */
async function devicesWith(url: string, tls: ClientTls): Promise<number | UpstreamError> {
  const client = new JsonClient(url, { name: 'driver', tls, timeoutMs: 5_000, connections: 1, headers: bearer(token) });
  try {
    return (await client.call('GET', '/v1/devices')).status;
  } catch (error) {
    if (error instanceof UpstreamError) return error;
    throw error;
  } finally {
    await client.destroy();
  }
}

describe('the driver over HTTPS with mutual TLS (certificates made for this test)', () => {
  let certs: TestCertificates;
  let driver: ServiceProcess;
  let url = '';
  let trusted: ClientTls;

  before(async () => {
    certs = await makeTestCertificates();
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    driver = startProcess('driver', entry, {
      DRIVER_PORT: String(port),
      DRIVER_BACKEND: 'memory',
      DRIVER_MEMORY_DEVICES: 'd0:c0:100',
      CLUSTER_TOKEN: token,
      TLS_CERT_FILE: certs.certFile,
      TLS_KEY_FILE: certs.keyFile,
      TLS_CA_FILE: certs.caFile,
      TLS_CLIENT_AUTH: 'require',
    });
    trusted = { ca: readFileSync(certs.caFile), cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) };
    await waitFor('the driver to answer over HTTPS', async () => ((await devicesWith(url, trusted)) === 200 ? true : undefined), 30_000);
  });
  after(async () => {
    await driver?.stop('SIGKILL');
    await certs?.remove();
  });

  it('answers a client that trusts its authority and presents a certificate from it', async () => {
    assert.equal(await devicesWith(url, trusted), 200);
  });

  it('refuses a client without a certificate, or with one from another authority, during the handshake', async () => {
    assert.ok((await devicesWith(url, { ca: trusted.ca })) instanceof UpstreamError, 'no client certificate');
    const other = { ca: trusted.ca, cert: readFileSync(certs.otherCertFile), key: readFileSync(certs.otherKeyFile) };
    assert.ok((await devicesWith(url, other)) instanceof UpstreamError, "another authority's certificate");
  });

  it('is refused by a client that does not trust its authority', async () => {
    const error = await devicesWith(url, { ...trusted, ca: readFileSync(certs.otherCaFile) });
    assert.ok(error instanceof UpstreamError);
    assert.match(error.message, /certificate/i);
  });

  it('does not answer plain HTTP', async () => {
    assert.ok((await devicesWith(url.replace('https:', 'http:'), {})) instanceof UpstreamError);
  });
});

describe('TLS settings the driver cannot use stop it with one clear line', () => {
  let certs: TestCertificates;
  before(async () => {
    certs = await makeTestCertificates();
  });
  after(async () => certs?.remove());

  const exitLine = async (env: Record<string, string>): Promise<string> => {
    const driver = startProcess('driver', entry, { DRIVER_BACKEND: 'memory', DRIVER_PORT: String(await freePort()), CLUSTER_TOKEN: token, ...env });
    const code = await new Promise<number | null>((resolve) => driver.child.once('exit', resolve));
    assert.equal(code, 1, driver.output());
    return driver.output().trim();
  };

  it('a certificate without its key', async () => {
    assert.match(await exitLine({ TLS_CERT_FILE: certs.certFile }), /^driver: invalid configuration: TLS_CERT_FILE and TLS_KEY_FILE go together/);
  });

  it('mutual TLS without an authority to check clients against', async () => {
    assert.match(await exitLine({ TLS_CERT_FILE: certs.certFile, TLS_KEY_FILE: certs.keyFile, TLS_CLIENT_AUTH: 'require' }), /^driver: invalid configuration: TLS_CLIENT_AUTH=require needs/);
  });

  it('a file that cannot be read', async () => {
    assert.match(await exitLine({ TLS_CERT_FILE: `${certs.dir}/missing.pem`, TLS_KEY_FILE: certs.keyFile }), /^driver: invalid configuration: TLS_CERT_FILE cannot be read \(ENOENT/);
  });
});
