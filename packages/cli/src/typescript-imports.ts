/**
 * The migrations are TypeScript files that knex imports. The launcher's bundle runs without
 * the tsx loader, which would cost it a second of every start, and registers it only when
 * there are migrations to apply.
 */
export async function allowTypeScriptImports(): Promise<void> {
  // From the sources, the launcher already runs under tsx.
  if (import.meta.url.endsWith('.ts')) return;
  const { register } = await import('tsx/esm/api');
  register();
}
