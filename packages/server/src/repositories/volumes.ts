import { ProblemError, type Queryable } from '@duplex/shared';
import type { SettleAction, SubmitCatalogEffect } from '../lib/task-rules.ts';

/**
 * The catalog of volumes created through duplex. A task that names a missing volume, or
 * a name that is taken, is refused before it is queued.
 */
export async function applySubmitEffect(db: Queryable, storageSystemId: string, taskId: string, effect: SubmitCatalogEffect): Promise<void> {
  if (effect.mustExist) {
    const { device, name } = effect.mustExist;
    const query = db('volumes').where({ storage_system_id: storageSystemId, device, name }).whereNot({ state: 'deleting' });
    const found = effect.markDeleting
      ? await query.update({ state: 'deleting', task_id: taskId, updated_at: db.fn.now() }).returning('name')
      : await query.select('name');
    if (found.length === 0) throw new ProblemError('volume-not-found', `volume '${name}' does not exist on device '${device}'`);
  }
  if (effect.reserve) {
    const { device, name, sizeBytes } = effect.reserve;
    const inserted = await db('volumes')
      .insert({ storage_system_id: storageSystemId, device, name, size_bytes: sizeBytes, state: 'creating', task_id: taskId })
      .onConflict(['storage_system_id', 'device', 'name'])
      .ignore()
      .returning('name');
    if (inserted.length === 0) throw new ProblemError('volume-exists', `a volume named '${name}' already exists on device '${device}'`);
  }
}

export async function applySettleActions(db: Queryable, storageSystemId: string, actions: SettleAction[]): Promise<void> {
  for (const step of actions) {
    const inSystem = db('volumes').where({ storage_system_id: storageSystemId });
    switch (step.action) {
      case 'confirm-reserved':
        await inSystem
          .where({ task_id: step.taskId, state: 'creating' })
          .update({ state: 'present', ...(step.sizeBytes !== undefined ? { size_bytes: step.sizeBytes } : {}), updated_at: db.fn.now() });
        break;
      case 'release-reserved':
        await inSystem.where({ task_id: step.taskId, state: 'creating' }).delete();
        break;
      case 'remove':
        await inSystem.where({ device: step.volume.device, name: step.volume.name }).delete();
        break;
      case 'restore':
        await inSystem.where({ device: step.volume.device, name: step.volume.name, state: 'deleting' }).update({ state: 'present', updated_at: db.fn.now() });
        break;
      case 'resize':
        await inSystem.where({ device: step.volume.device, name: step.volume.name }).update({ size_bytes: step.sizeBytes, updated_at: db.fn.now() });
        break;
      case 'clear-device':
        await inSystem.where({ device: step.device }).whereNot({ state: 'creating' }).delete();
        break;
    }
  }
}
