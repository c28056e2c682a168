import { ProblemError, runStatement, type Queryable, type Statement } from '@duplex/shared';
import type { SettleAction, VolumeRef } from '../lib/task-rules.ts';

// The catalog of volumes created through duplex: a task that names a missing volume, or a
// name that is taken, is refused before it is queued.

/**
 * Applies the catalog actions of a batch of ended tasks with one statement per kind of
 * action, however many tasks the batch holds.
 *
 * Each statement names the rows it changes with `= any(…)` on the columns of an index (a
 * reservation by its task, a volume by its key), so that Postgres looks those rows up. A join
 * with the batch alone leaves the choice to estimates, and on tables that grew faster than their
 * statistics the planner read every volume for each batch: the catalog's key starts with the
 * storage system, which every volume of a system shares.
 */
export async function applySettleActions(db: Queryable, storageSystemId: string, actions: SettleAction[]): Promise<void> {
  const of = <A extends SettleAction['action']>(action: A) =>
    actions.filter((step): step is Extract<SettleAction, { action: A }> => step.action === action);
  const confirmed = of('confirm-reserved');
  const released = of('release-reserved').map((step) => step.taskId);
  const removed = of('remove').map((step) => step.volume);
  const restored = of('restore').map((step) => step.volume);
  const resized = of('resize');
  const cleared = of('clear-device');

  // A task id is unique to its storage system: a reservation is found by its task alone.
  if (confirmed.length > 0) {
    const taskIds = confirmed.map((step) => step.taskId);
    // The settle statement of every volume.create: run on node-postgres directly, as the task path's are.
    await runStatement(db, confirmReservedStatement, [taskIds, confirmed.map((step) => step.sizeBytes ?? null)]);
  }
  if (released.length > 0) {
    await db.raw(`delete from volumes where task_id = any(?::text[]) and state = 'creating'`, [released]);
  }
  if (removed.length > 0) {
    await db.raw(
      `delete from volumes v using unnest(?::text[], ?::text[]) as r(device, name)
        where v.storage_system_id = ? and v.device = any(?::text[]) and v.name = any(?::text[]) and v.device = r.device and v.name = r.name`,
      byKey(storageSystemId, removed),
    );
  }
  if (restored.length > 0) {
    await db.raw(
      `update volumes v set state = 'present', updated_at = now() from unnest(?::text[], ?::text[]) as r(device, name)
        where v.storage_system_id = ? and v.device = any(?::text[]) and v.name = any(?::text[]) and v.device = r.device and v.name = r.name
          and v.state = 'deleting'`,
      byKey(storageSystemId, restored),
    );
  }
  if (resized.length > 0) {
    await db.raw(
      `update volumes v set size_bytes = r.size_bytes, updated_at = now() from unnest(?::text[], ?::text[], ?::bigint[]) as r(device, name, size_bytes)
        where v.storage_system_id = ? and v.device = any(?::text[]) and v.name = any(?::text[]) and v.device = r.device and v.name = r.name`,
      byKey(storageSystemId, resized.map((step) => step.volume), resized.map((step) => step.sizeBytes)),
    );
  }
  // Last, so a volume created before the format in the same batch is removed too. Task ids
  // sort by creation time: volumes of tasks submitted after the format survive it.
  if (cleared.length > 0) {
    await db.raw(
      `delete from volumes v using unnest(?::text[], ?::text[]) as f(device, task_id)
        where v.storage_system_id = ? and v.device = any(?::text[]) and v.device = f.device and v.state <> 'creating'
          and (v.task_id is null or v.task_id < f.task_id)`,
      [cleared.map((step) => step.device), cleared.map((step) => step.taskId), storageSystemId, cleared.map((step) => step.device)],
    );
  }
}

const confirmReservedStatement: Statement = {
  text: `update volumes v set state = 'present', size_bytes = coalesce(c.size_bytes, v.size_bytes), updated_at = now()
           from unnest($1::text[], $2::bigint[]) as c(task_id, size_bytes)
          where v.task_id = any($1::text[]) and v.state = 'creating' and v.task_id = c.task_id`,
};

/**
 * The bindings that find volumes by their key: each volume's device and name (to pair them,
 * with a value per volume when given), then the storage system and the same lists again (for
 * the index).
 */
function byKey(storageSystemId: string, volumes: VolumeRef[], values?: number[]): (string | string[] | number[])[] {
  const devices = volumes.map((volume) => volume.device);
  const names = volumes.map((volume) => volume.name);
  return [devices, names, ...(values ? [values] : []), storageSystemId, devices, names];
}

/** The problem that refuses a task naming a volume the catalog does not hold. */
export function volumeNotFound(device: string, name: string): ProblemError {
  return new ProblemError('volume-not-found', `volume '${name}' does not exist on device '${device}'`);
}
