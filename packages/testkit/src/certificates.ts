import { webcrypto } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type X509 = typeof import('@peculiar/x509');

/**
 * PEM files for running duplex services over HTTPS with mutual TLS in tests, in a fresh folder
 * of their own. Every service is a server and also a client of the others, so there is one
 * certificate and key for all of them (`certFile`, `keyFile`), good for both roles; `caFile` is
 * what they all trust. The `other*` files come from an unrelated certificate authority, for tests
 * that a peer from outside the deployment is refused.
 */
export interface TestCertificates {
  /** The folder that holds every file below; `remove()` deletes it. */
  dir: string;
  /** The certificate authority that signed `certFile`: what servers and clients trust. */
  caFile: string;
  /**
   * The certificate of every service, signed by `caFile`, for serving and for calling
   * (extended key usages serverAuth and clientAuth), valid for localhost, 127.0.0.1, ::1 and
   * the `hosts` it was made with.
   */
  certFile: string;
  /** The private key of `certFile` (PKCS#8 PEM). */
  keyFile: string;
  /** A certificate authority unrelated to `caFile`: a client trusting only it must refuse the services. */
  otherCaFile: string;
  /** A certificate signed by `otherCaFile`, with the same uses and names as `certFile`: a service must refuse a peer presenting it. */
  otherCertFile: string;
  /** The private key of `otherCertFile` (PKCS#8 PEM). */
  otherKeyFile: string;
  /** Deletes `dir` and everything in it. */
  remove(): Promise<void>;
}

export interface TestCertificateOptions {
  /** More names the service certificate is valid for, besides localhost, 127.0.0.1 and ::1: DNS names or IP addresses. */
  hosts?: string[];
}

const keyAlgorithm = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const signingAlgorithm = { name: 'ECDSA', hash: 'SHA-256' } as const;
const hourMs = 60 * 60 * 1000;

// Loaded on first use, so that the many tests importing the testkit for other things do not pay
// for it; @peculiar/x509 needs a Reflect metadata polyfill in place before it loads.
let x509Loading: Promise<X509> | undefined;
function loadX509(): Promise<X509> {
  x509Loading ??= import('reflect-metadata').then(() => import('@peculiar/x509'));
  return x509Loading;
}

interface Authority {
  keys: webcrypto.CryptoKeyPair;
  certificate: import('@peculiar/x509').X509Certificate;
}

async function makeAuthority(x509: X509, name: string, notBefore: Date, notAfter: Date): Promise<Authority> {
  const keys = await webcrypto.subtle.generateKey(keyAlgorithm, true, ['sign', 'verify']);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    {
      name,
      keys,
      notBefore,
      notAfter,
      signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  return { keys, certificate };
}

async function makeServiceCertificate(
  x509: X509,
  authority: Authority,
  name: string,
  hosts: string[],
  notBefore: Date,
  notAfter: Date,
): Promise<{ certificatePem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(keyAlgorithm, true, ['sign', 'verify']);
  const certificate = await x509.X509CertificateGenerator.create(
    {
      subject: name,
      issuer: authority.certificate.subject,
      publicKey: keys.publicKey,
      signingKey: authority.keys.privateKey,
      notBefore,
      notAfter,
      signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension(hosts.map((host) => ({ type: isIP(host) ? 'ip' : 'dns', value: host }))),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
        await x509.AuthorityKeyIdentifierExtension.create(authority.keys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  return { certificatePem: certificate.toString('pem'), keyPem: await privateKeyPem(x509, keys.privateKey) };
}

async function privateKeyPem(x509: X509, key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

/**
 * Makes a certificate authority, a certificate for the services signed by it, and an unrelated
 * authority with a certificate of its own, all ECDSA P-256 with SHA-256 and valid from an hour
 * ago to a day ahead, and writes them as PEM files (readable by the owner only) into a fresh
 * folder under the system's temporary folder. Takes milliseconds; call `remove()` when done.
 */
export async function makeTestCertificates(options: TestCertificateOptions = {}): Promise<TestCertificates> {
  const x509 = await loadX509();
  const dir = await mkdtemp(join(tmpdir(), 'duplex-certificates-'));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    const now = Date.now();
    const notBefore = new Date(now - hourMs);
    const notAfter = new Date(now + 24 * hourMs);
    const hosts = [...new Set(['localhost', '127.0.0.1', '::1', ...(options.hosts ?? [])])];

    const authority = await makeAuthority(x509, 'CN=duplex test CA', notBefore, notAfter);
    const service = await makeServiceCertificate(x509, authority, 'CN=duplex test service', hosts, notBefore, notAfter);
    const otherAuthority = await makeAuthority(x509, 'CN=duplex other test CA', notBefore, notAfter);
    const otherService = await makeServiceCertificate(x509, otherAuthority, 'CN=duplex other test service', hosts, notBefore, notAfter);

    const files = {
      caFile: join(dir, 'ca.pem'),
      certFile: join(dir, 'service.pem'),
      keyFile: join(dir, 'service-key.pem'),
      otherCaFile: join(dir, 'other-ca.pem'),
      otherCertFile: join(dir, 'other-service.pem'),
      otherKeyFile: join(dir, 'other-service-key.pem'),
    };
    const contents: Record<keyof typeof files, string> = {
      caFile: authority.certificate.toString('pem'),
      certFile: service.certificatePem,
      keyFile: service.keyPem,
      otherCaFile: otherAuthority.certificate.toString('pem'),
      otherCertFile: otherService.certificatePem,
      otherKeyFile: otherService.keyPem,
    };
    for (const name of Object.keys(files) as (keyof typeof files)[]) {
      await writeFile(files[name], `${contents[name].trimEnd()}\n`, { mode: 0o600 });
    }
    return { dir, ...files, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}
