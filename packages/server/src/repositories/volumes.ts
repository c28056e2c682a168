import { ProblemError, type Queryable } from '@duplex/shared';
import type { SettleAction, SubmitCatalogEffect } from '../lib/task-rules.ts';

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
    await db.raw(
      `update volumes v set state = 'present', size_bytes = coalesce(c.size_bytes, v.size_bytes), updated_at = now()
         from jsonb_to_recordset(?::jsonb) as c(task_id text, size_bytes bigint)
        where v.storage_system_id = ? and v.task_id = c.task_id and v.state = 'creating'`,
      [JSON.stringify(confirmed.map((step) => ({ task_id: step.taskId, size_bytes: step.sizeBytes ?? null }))), storageSystemId],
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

export interface PendingSubmit {
  taskId: string;
  storageSystemId: string;
  effect: SubmitCatalogEffect;
}

/**
 * The catalog checks of many submitted tasks at once, one statement per kind of check:
 * answers, per task id, the problem that refuses it. Each check sees the catalog as it was
 * before the batch, except that two tasks of the batch cannot create the same name or delete
 * the same volume (the first in the batch wins).
 */
export async function applySubmitEffects(db: Queryable, pending: PendingSubmit[]): Promise<Map<string, ProblemError>> {
  const refused = new Map<string, ProblemError>();
  const rows = (pick: (item: PendingSubmit) => { device: string; name: string } | undefined, only: (item: PendingSubmit) => boolean) =>
    pending.flatMap((item, ord) => {
      const volume = only(item) ? pick(item) : undefined;
      return volume ? [{ task_id: item.taskId, storage_system_id: item.storageSystemId, device: volume.device, name: volume.name, ord }] : [];
    });

  const mustExist = rows((item) => item.effect.mustExist, (item) => !item.effect.markDeleting);
  if (mustExist.length > 0) {
    const { rows: found } = await db.raw<{ rows: { task_id: string }[] }>(
      `select w.task_id from jsonb_to_recordset(?::jsonb) as w(task_id text, storage_system_id text, device text, name text)
         join volumes v on v.storage_system_id = w.storage_system_id and v.device = w.device and v.name = w.name and v.state = 'present'`,
      [JSON.stringify(mustExist)],
    );
    const present = new Set(found.map((row) => row.task_id));
    for (const row of mustExist) if (!present.has(row.task_id)) refused.set(row.task_id, volumeNotFound(row.device, row.name));
  }

  const deleting = rows((item) => item.effect.mustExist, (item) => item.effect.markDeleting === true);
  if (deleting.length > 0) {
    const { rows: marked } = await db.raw<{ rows: { task_id: string }[] }>(
      `with wanted as (
         select distinct on (storage_system_id, device, name) *
           from jsonb_to_recordset(?::jsonb) as w(task_id text, storage_system_id text, device text, name text, ord int)
          order by storage_system_id, device, name, ord)
       update volumes v set state = 'deleting', task_id = w.task_id, updated_at = now()
         from wanted w
        where v.storage_system_id = w.storage_system_id and v.device = w.device and v.name = w.name and v.state = 'present'
    returning w.task_id`,
      [JSON.stringify(deleting)],
    );
    const done = new Set(marked.map((row) => row.task_id));
    for (const row of deleting) if (!done.has(row.task_id)) refused.set(row.task_id, volumeNotFound(row.device, row.name));
  }

  const reserving = pending.filter((item) => item.effect.reserve && !refused.has(item.taskId));
  if (reserving.length > 0) {
    const reservations = reserving.map((item) => {
      const { device, name, sizeBytes } = item.effect.reserve!;
      return { storage_system_id: item.storageSystemId, device, name, size_bytes: sizeBytes, task_id: item.taskId };
    });
    // In batch order, so that of two tasks creating one name the first wins.
    const { rows: inserted } = await db.raw<{ rows: { task_id: string }[] }>(
      `insert into volumes (storage_system_id, device, name, size_bytes, state, task_id)
       select storage_system_id, device, name, size_bytes, 'creating', task_id
         from rows from (jsonb_to_recordset(?::jsonb) as (storage_system_id text, device text, name text, size_bytes bigint, task_id text)) with ordinality as r
        order by r.ordinality
       on conflict (storage_system_id, device, name) do nothing
    returning task_id`,
      [JSON.stringify(reservations)],
    );
    const reserved = new Set(inserted.map((row) => row.task_id));
    for (const item of reserving) {
      const { device, name } = item.effect.reserve!;
      if (!reserved.has(item.taskId)) refused.set(item.taskId, new ProblemError('volume-exists', `a volume named '${name}' already exists on device '${device}'`));
    }
  }
  return refused;
}

function volumeNotFound(device: string, name: string): ProblemError {
  return new ProblemError('volume-not-found', `volume '${name}' does not exist on device '${device}'`);
}
