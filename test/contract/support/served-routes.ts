import type { App } from './services.ts';

export interface ServedRoute {
  method: string;
  url: string;
}

const treeLine = /^((?:│ {3}| {4})*)(?:├── |└── )(.+?)(?: \(([A-Z]+(?:, [A-Z]+)*)\))?$/;

/**
 * Every route a ready Fastify app serves, except the Swagger UI under /docs, read from
 * `printRoutes({ commonPrefix: false })`, whose tree shows each node's segment as registered
 * and its methods. Fastify has no public list of routes, and an onRoute hook would have to
 * exist before buildApp adds them. Each route found is confirmed with `hasRoute`, so a misread
 * tree fails loudly instead of hiding a route. (The Swagger UI's wildcard is printed where no
 * route is, which is one more reason /docs is left out before that check.)
 */
export function servedRoutes(app: App): ServedRoute[] {
  const routes: ServedRoute[] = [];
  const segments: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    if (line.trim() === '') continue;
    const match = treeLine.exec(line);
    if (!match) throw new Error(`cannot read the route tree line ${JSON.stringify(line)}`);
    const [, indent = '', segment = '', methods] = match;
    segments.length = indent.length / 4;
    segments.push(segment);
    if (methods === undefined) continue;
    const url = segments.join('');
    // Swagger UI and the web console are pages for people, not operations of the API.
    if (['/docs', '/console'].some((page) => url === page || url.startsWith(`${page}/`))) continue;
    for (const method of methods.split(', ')) {
      // The tree prints a literal colon in a static segment as one colon; the router takes it doubled.
      const registered = [url, escapeStaticColons(url)].find((candidate) => app.hasRoute({ method: method as 'GET', url: candidate }));
      if (!registered) throw new Error(`route tree names ${method} ${url}, which hasRoute does not know`);
      routes.push({ method, url: registered });
    }
  }
  // Fastify adds a HEAD route for each GET; it is not an operation of its own.
  const gets = new Set(routes.filter((route) => route.method === 'GET').map((route) => route.url));
  return routes.filter((route) => !(route.method === 'HEAD' && gets.has(route.url)));
}

function escapeStaticColons(url: string): string {
  return url
    .split('/')
    .map((segment) => (segment.startsWith(':') ? segment : segment.replaceAll(':', '::')))
    .join('/');
}
