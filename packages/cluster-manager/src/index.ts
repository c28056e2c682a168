export { buildApp, type BuildClusterManagerOptions } from './app.ts';
export { clusterManagerConfigSchema, loadClusterManagerConfig, parseServers, type ClusterManagerConfig } from './config.ts';
export const clusterManagerEntry = new URL('./server.ts', import.meta.url);
