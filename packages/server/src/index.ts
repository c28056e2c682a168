export { buildApp, type BuildServerOptions } from './app.ts';
export { loadServerConfig, serverConfigSchema, type ServerConfig } from './config.ts';
export const serverEntry = new URL('./server.ts', import.meta.url);
