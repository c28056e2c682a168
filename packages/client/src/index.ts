export { createDuplexClient, isTerminal, terminalStates, type DuplexClient, type DuplexClientOptions, type Task, type TaskRequest, type TaskState, type WaitOptions } from './client.ts';
export { createFailoverFetch, ServersUnavailableError, type ClientTls, type FailoverOptions } from './failover-fetch.ts';
export { EventStreamError, readEvents, type DuplexEvent, type EventQuery, type EventStreamOptions, type StreamItem } from './events.ts';
export { ProblemResponseError, unwrap, type Problem } from './problems.ts';
