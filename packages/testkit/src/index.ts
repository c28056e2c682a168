export * from './database.ts';
export * from './processes.ts';
