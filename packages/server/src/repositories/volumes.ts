import { ProblemError, type Queryable } from '@duplex/shared';
import type { SettleAction } from '../lib/task-rules.ts';

// The catalog of volumes created through duplex: a task that names a missing volume, or a
// name that is taken, is refused before it is queued.

/**
 * Applies the catalog actions of a batch of ended tasks with one statement per kind of
 * action, however many tasks the batch holds.
 */
export async function applySettleActions(db: Queryable, storageSystemId: string, actions: SettleAction[]): Promise<void> {
  const of = <A extends SettleAction['action']>(action: A) =>
    actions.filter((step): step is Extract<SettleAction, { action: A }> => step.action === action);
  const confirmed = of('confirm-reserved');
  const released = of('release-reserved');
  const removed = of('remove').map((step) => step.volume);
  const restored = of('restore').map((step) => step.volume);
  const resized = of('resize').map((step) => ({ ...step.volume, size_bytes: step.sizeBytes }));
  const cleared = of('clear-device');

  if (confirmed.length > 0) {
    // `task_id = any(…)` makes the reservations index (volumes_reserved_by_task) find the rows;
    // a join on the input alone was planned as a scan of every volume.
    const taskIds = confirmed.map((step) => step.taskId);
    await db.raw(
      `update volumes v set state = 'present', size_bytes = coalesce(c.size_bytes, v.size_bytes), updated_at = now()
         from unnest(?::text[], ?::bigint[]) as c(task_id, size_bytes)
        where v.storage_system_id = ? and v.task_id = any(?::text[]) and v.task_id = c.task_id and v.state = 'creating'`,
      // knex's binding type has no arrays with nulls; node-postgres sends a null element as NULL.
      [taskIds, confirmed.map((step) => step.sizeBytes ?? null) as number[], storageSystemId, taskIds],
    );
  }
  if (released.length > 0) {
    await db('volumes').where({ storage_system_id: storageSystemId, state: 'creating' }).whereIn('task_id', released.map((step) => step.taskId)).delete();
  }
  if (removed.length > 0) {
    await db.raw(
      `delete from volumes v using jsonb_to_recordset(?::jsonb) as r(device text, name text)
        where v.storage_system_id = ? and v.device = r.device and v.name = r.name`,
      [JSON.stringify(removed), storageSystemId],
    );
  }
  if (restored.length > 0) {
    await db.raw(
      `update volumes v set state = 'present', updated_at = now() from jsonb_to_recordset(?::jsonb) as r(device text, name text)
        where v.storage_system_id = ? and v.device = r.device and v.name = r.name and v.state = 'deleting'`,
      [JSON.stringify(restored), storageSystemId],
    );
  }
  if (resized.length > 0) {
    await db.raw(
      `update volumes v set size_bytes = r.size_bytes, updated_at = now() from jsonb_to_recordset(?::jsonb) as r(device text, name text, size_bytes bigint)
        where v.storage_system_id = ? and v.device = r.device and v.name = r.name`,
      [JSON.stringify(resized), storageSystemId],
    );
  }
  // Last, so a volume created before the format in the same batch is removed too. Task ids
  // sort by creation time: volumes of tasks submitted after the format survive it.
  if (cleared.length > 0) {
    await db.raw(
      `delete from volumes v using jsonb_to_recordset(?::jsonb) as f(device text, task_id text)
        where v.storage_system_id = ? and v.device = f.device and v.state <> 'creating'
          and (v.task_id is null or v.task_id < f.task_id)`,
      [JSON.stringify(cleared.map((step) => ({ device: step.device, task_id: step.taskId }))), storageSystemId],
    );
  }
}

/** The problem that refuses a task naming a volume the catalog does not hold. */
export function volumeNotFound(device: string, name: string): ProblemError {
  return new ProblemError('volume-not-found', `volume '${name}' does not exist on device '${device}'`);
}
