import { randomBytes } from 'node:crypto';

/** Task ids sort by creation time, which keeps index inserts local. */
export function newTaskId(now: number = Date.now()): string {
  return `tsk_${now.toString(36).padStart(9, '0')}${randomBytes(8).toString('hex')}`;
}

export const agentIdOf = (registration: { server_id: string; storage_system_id: string; cluster_id: string; name: string }): string =>
  `${registration.server_id}:${registration.storage_system_id}:${registration.cluster_id}:${registration.name}`;
