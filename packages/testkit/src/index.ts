export * from './database.ts';
export * from './processes.ts';
export * from './event-stream.ts';
export * from './prometheus.ts';
export * from './auth.ts';
export * from './certificates.ts';
export * from './fuzz-requests.ts';
