import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect, type TLSSocket } from 'node:tls';
import { Agent, request } from 'undici';
import { makeTestCertificates, type TestCertificates } from '../src/certificates.ts';

/** What the server saw of one request's TLS peer. */
interface PeerSeen {
  authorized: boolean;
  subject: string | undefined;
  issuer: string | undefined;
}

let certificates: TestCertificates;
let pem: { ca: string; cert: string; key: string; otherCa: string; otherCert: string; otherKey: string };
let server: Server;
let origin: string;
let port: number;
const seen: PeerSeen[] = [];
/** Connections the server dropped before any request: its error and, when it judged a certificate, why it refused it. */
const refusedByServer: { code: string | undefined; authorizationError: string | undefined }[] = [];
const agents: Agent[] = [];

function agent(connectOptions: { ca: string; cert?: string; key?: string }): Agent {
  const made = new Agent({ connect: { ...connectOptions, timeout: 5_000 } });
  agents.push(made);
  return made;
}

/** Connects with Node's TLS client and resolves once the server's certificate has been judged. */
function tlsConnect(servername: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername, ca: pem.ca, cert: pem.cert, key: pem.key });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

before(async () => {
  certificates = await makeTestCertificates({ hosts: ['server-a.duplex.test', '10.20.30.40'] });
  pem = {
    ca: readFileSync(certificates.caFile, 'utf8'),
    cert: readFileSync(certificates.certFile, 'utf8'),
    key: readFileSync(certificates.keyFile, 'utf8'),
    otherCa: readFileSync(certificates.otherCaFile, 'utf8'),
    otherCert: readFileSync(certificates.otherCertFile, 'utf8'),
    otherKey: readFileSync(certificates.otherKeyFile, 'utf8'),
  };
  server = createServer({ key: pem.key, cert: pem.cert, ca: pem.ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const socket = req.socket as TLSSocket;
    const peer = socket.getPeerCertificate();
    // A name may hold an attribute more than once; these certificates have one CN each.
    const commonName = (name: { CN?: string | string[] } | undefined) => [name?.CN].flat()[0];
    const entry: PeerSeen = { authorized: socket.authorized, subject: commonName(peer.subject), issuer: commonName(peer.issuer) };
    seen.push(entry);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(entry));
  });
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket) => {
    refusedByServer.push({ code: error.code, authorizationError: socket.authorizationError?.toString() });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  origin = `https://127.0.0.1:${port}`;
});

after(async () => {
  await Promise.all(agents.map((made) => made.destroy()));
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await certificates?.remove();
});

describe('the files', () => {
  test('are PEM, readable by the owner only', () => {
    for (const file of [certificates.caFile, certificates.certFile, certificates.otherCaFile, certificates.otherCertFile]) {
      assert.match(readFileSync(file, 'utf8'), /^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n$/);
      assert.equal(statSync(file).mode & 0o777, 0o600, file);
    }
    for (const file of [certificates.keyFile, certificates.otherKeyFile]) {
      assert.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
      assert.equal(statSync(file).mode & 0o777, 0o600, file);
    }
  });

  test('hold a CA and a service certificate for both TLS roles, signed by it and not by the other CA', () => {
    const ca = new X509Certificate(pem.ca);
    const service = new X509Certificate(pem.cert);
    const otherCa = new X509Certificate(pem.otherCa);
    const otherService = new X509Certificate(pem.otherCert);
    assert.equal(ca.ca, true);
    assert.equal(ca.subject, 'CN=duplex test CA');
    assert.ok(ca.verify(ca.publicKey), 'the CA is self-signed');
    assert.equal(service.ca, false);
    assert.equal(service.subject, 'CN=duplex test service');
    assert.equal(service.publicKey.asymmetricKeyType, 'ec');
    assert.equal(service.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.deepEqual(service.keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    assert.ok(service.checkIssued(ca) && service.verify(ca.publicKey));
    assert.ok(!service.verify(otherCa.publicKey));
    assert.ok(otherService.checkIssued(otherCa) && otherService.verify(otherCa.publicKey));
    assert.ok(!otherService.verify(ca.publicKey));
    const hour = 60 * 60 * 1000;
    const validFrom = Date.parse(service.validFrom);
    const validTo = Date.parse(service.validTo);
    assert.ok(Math.abs(Date.now() - hour - validFrom) < 60_000, `valid from ${service.validFrom}`);
    assert.ok(Math.abs(Date.now() + 24 * hour - validTo) < 60_000, `valid to ${service.validTo}`);
  });
});

describe('over TLS on loopback, with mutual authentication', () => {
  test('a client with the service certificate is answered, and the server sees it authorized', async () => {
    const before = seen.length;
    const response = await request(`${origin}/ping`, { dispatcher: agent({ ca: pem.ca, cert: pem.cert, key: pem.key }) });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(await response.body.json(), { authorized: true, subject: 'duplex test service', issuer: 'duplex test CA' });
    assert.equal(seen.length, before + 1);
    assert.equal(seen.at(-1)?.authorized, true);
  });

  test('a client without a certificate is refused', async () => {
    const before = seen.length;
    const refusedBefore = refusedByServer.length;
    // TLS 1.3 lets the client finish its handshake first; the server then alerts and closes.
    await assert.rejects(request(`${origin}/ping`, { dispatcher: agent({ ca: pem.ca }) }), (error: NodeJS.ErrnoException) => {
      assert.match(`${error.code} ${error.message}`, /CERTIFICATE_REQUIRED|certificate required|other side closed|ECONNRESET/i);
      return true;
    });
    assert.equal(seen.length, before, 'the request never reached the handler');
    await waitFor(() => refusedByServer.slice(refusedBefore).some((refused) => refused.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE'));
  });

  test('a client trusting only the other CA refuses the server', async () => {
    const before = seen.length;
    await assert.rejects(
      request(`${origin}/ping`, { dispatcher: agent({ ca: pem.otherCa, cert: pem.otherCert, key: pem.otherKey }) }),
      (error: NodeJS.ErrnoException) => {
        // The server sends the CA along with its certificate, so the client finds a root it does not trust.
        assert.ok(['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'].includes(error.code ?? ''), `${error.code}: ${error.message}`);
        return true;
      },
    );
    assert.equal(seen.length, before);
  });

  test('a client presenting the other CA’s certificate is refused by the server', async () => {
    const before = seen.length;
    const refusedBefore = refusedByServer.length;
    await assert.rejects(
      request(`${origin}/ping`, { dispatcher: agent({ ca: pem.ca, cert: pem.otherCert, key: pem.otherKey }) }),
      (error: NodeJS.ErrnoException) => {
        assert.match(`${error.code} ${error.message}`, /UNKNOWN_CA|unknown ca|other side closed|ECONNRESET/i);
        return true;
      },
    );
    assert.equal(seen.length, before);
    // The server's own verdict on the certificate, whatever the client made of being hung up on.
    await waitFor(() =>
      refusedByServer.slice(refusedBefore).some((refused) => refused.authorizationError === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'),
    );
  });

  test('the server certificate verifies for 127.0.0.1 and localhost, and not for another name', async () => {
    for (const servername of ['localhost', 'server-a.duplex.test']) {
      const socket = await tlsConnect(servername);
      try {
        assert.equal(socket.authorized, true, servername);
        assert.equal(socket.getPeerCertificate().subject.CN, 'duplex test service');
      } finally {
        socket.destroy();
      }
    }
    // Without a name the client checks the address it dialled, 127.0.0.1, against the IP entries.
    const response = await request(`${origin}/ping`, { dispatcher: agent({ ca: pem.ca, cert: pem.cert, key: pem.key }) });
    assert.equal(response.statusCode, 200);
    await response.body.dump();
    await assert.rejects(tlsConnect('elsewhere.duplex.test'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });

    const service = new X509Certificate(pem.cert);
    assert.equal(service.checkHost('localhost'), 'localhost');
    assert.equal(service.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(service.checkIP('::1'), '::1');
    assert.equal(service.checkIP('10.20.30.40'), '10.20.30.40', 'an extra IP from options.hosts');
    assert.equal(service.checkIP('127.0.0.2'), undefined);
  });
});

test('remove() deletes the folder', async () => {
  const made = await makeTestCertificates();
  assert.ok(existsSync(made.certFile));
  await made.remove();
  assert.equal(existsSync(made.dir), false);
});

/** Waits for the server's record of a refused connection, which can come just after the client's error. */
async function waitFor(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`the server refused no connection as expected; it refused: ${JSON.stringify(refusedByServer)}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
