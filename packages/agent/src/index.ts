export { buildApp, type BuildAgentOptions, type AgentRuntime } from './app.ts';
export { agentConfigSchema, loadAgentConfig, type AgentConfig } from './config.ts';
export const agentEntry = new URL('./server.ts', import.meta.url);
