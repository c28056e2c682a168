import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

/** The console's files, by the name the page asks for, with their media types. */
const files = {
  'index.html': 'text/html; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
  'console.css': 'text/css; charset=utf-8',
} as const;

/**
 * The folder of the console's files: packages/server/console in the repository, found from
 * this module whether it runs from its source or from a bundle in packages/cli/dist.
 */
function consoleDirectory(): string {
  for (let directory = dirname(fileURLToPath(import.meta.url)); ; directory = dirname(directory)) {
    const candidate = join(directory, 'packages', 'server', 'console');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
    if (dirname(directory) === directory) throw new Error('the console files (packages/server/console) are not in this installation');
  }
}

/**
 * The web console at /console/: one page and its script and style, read once at start. The
 * page calls this server's API with the token the user logs in with, so it needs no session
 * here; its Content-Security-Policy lets it load and call nothing but this server.
 */
export function installConsole(app: FastifyInstance): void {
  const directory = consoleDirectory();
  const contents = new Map(Object.entries(files).map(([name, type]) => [name, { type, body: readFileSync(join(directory, name)) }]));
  const security = {
    'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    'x-content-type-options': 'nosniff',
    'cache-control': 'no-cache',
  };
  app.get('/console', { schema: { hide: true } }, async (_request, reply) => reply.redirect('/console/', 301));
  app.get('/console/', { schema: { hide: true } }, async (_request, reply) => {
    const page = contents.get('index.html')!;
    return reply.headers(security).type(page.type).send(page.body);
  });
  app.get<{ Params: { file: string } }>('/console/:file', { schema: { hide: true } }, async (request, reply) => {
    const file = contents.get(request.params.file);
    if (!file) return reply.callNotFound();
    return reply.headers(security).type(file.type).send(file.body);
  });
}
