import { readFileSync } from 'node:fs';
import type { ServerOptions } from 'node:https';
import { ConfigError, type ConfigVariable } from './config.ts';

/** The TLS settings every service takes (spread into its configuration schema). */
export const tlsConfigVariables = {
  TLS_CERT_FILE: {
    type: 'string',
    description:
      'A PEM certificate (chain) to serve HTTPS with, together with TLS_KEY_FILE; the service also presents it to the services it calls, for mutual TLS. Without both, the service serves plain HTTP.',
  },
  TLS_KEY_FILE: { type: 'string', description: "The PEM private key of TLS_CERT_FILE (keep it readable by the service's user only)." },
  TLS_CA_FILE: {
    type: 'string',
    description:
      "PEM certificate authorities to verify peers with: the services this one calls over HTTPS and, with TLS_CLIENT_AUTH=require, the clients that call it. Without it, HTTPS peers are verified against Node's bundled authorities.",
  },
  TLS_CLIENT_AUTH: {
    type: 'string',
    enum: ['none', 'require'],
    default: 'none',
    description: '`require`: mutual TLS; a client without a certificate signed by TLS_CA_FILE is refused during the handshake (health checks and users included). Needs TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE.',
  },
} as const satisfies Record<string, ConfigVariable>;

export interface TlsSettings {
  TLS_CERT_FILE?: string | undefined;
  TLS_KEY_FILE?: string | undefined;
  TLS_CA_FILE?: string | undefined;
  TLS_CLIENT_AUTH?: 'none' | 'require' | undefined;
}

/** What a client presents and trusts: the undici `connect` options of an HTTPS call. */
export interface ClientTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** A service's TLS, read from its files once at start. */
export interface ServiceTls {
  /** The HTTPS options to serve with; undefined for plain HTTP. */
  server?: ServerOptions;
  /** What the service's own calls present and trust. */
  client: ClientTls;
  /** `https` or `http`: the scheme of the URLs the service advertises. */
  scheme: 'https' | 'http';
}

function readPem(variable: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${variable} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}: ${path})`);
  }
}

/** Reads the TLS files a service is configured with; a missing half or an unreadable file is a ConfigError. */
export function loadTls(settings: TlsSettings): ServiceTls {
  const { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile, TLS_CA_FILE: caFile, TLS_CLIENT_AUTH: clientAuth = 'none' } = settings;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigError('invalid configuration: TLS_CERT_FILE and TLS_KEY_FILE go together (one is set without the other)');
  }
  if (clientAuth === 'require' && (certFile === undefined || caFile === undefined)) {
    throw new ConfigError('invalid configuration: TLS_CLIENT_AUTH=require needs TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE');
  }
  const client: ClientTls = {};
  if (caFile !== undefined) client.ca = readPem('TLS_CA_FILE', caFile);
  if (certFile === undefined || keyFile === undefined) return { client, scheme: 'http' };
  client.cert = readPem('TLS_CERT_FILE', certFile);
  client.key = readPem('TLS_KEY_FILE', keyFile);
  const server: ServerOptions = { cert: client.cert, key: client.key };
  if (client.ca) server.ca = client.ca;
  if (clientAuth === 'require') Object.assign(server, { requestCert: true, rejectUnauthorized: true });
  return { server, client, scheme: 'https' };
}
