import { link, lstat, mkdir, open, readdir, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ProblemError } from '@duplex/shared';
import { parseLabel, type DeviceInspection, type DeviceLabel, type DeviceStore, type VolumeEntry } from './device-store.ts';
import { parseRecord, type ExecutionRecord } from './execution-record.ts';
import {
  createNoFollow,
  describeError,
  ensureRealDirectory,
  errorCode,
  isAllZero,
  problemFromFsError,
  readNoFollow,
  readTextNoFollow,
  realDirectoryStats,
  syncDirectory,
  writeJsonAtomically,
  writeNoFollow,
} from './files.ts';
import { assertVolumeName, isDeviceId, isVolumeName, taskIdPattern } from './names.ts';

const copyChunkBytes = 1 << 20;

/**
 * Devices as directories under one root: `<id>/device.json` (the label), `volumes/<name>`
 * (sparse files), `fence.json` (the newest epoch) and `executions/<task_id>.json`. A
 * `FAILED` file in a device directory marks the device unavailable.
 */
export class FileDeviceStore implements DeviceStore {
  constructor(readonly root: string) {}

  async deviceIds(): Promise<string[]> {
    const entries = await readdir(this.root, { withFileTypes: true });
    const ids: string[] = [];
    for (const entry of entries) {
      if (!isDeviceId(entry.name)) continue;
      // A device directory may be a link to where the device is mounted.
      if (entry.isDirectory() || (entry.isSymbolicLink() && (await isDirectory(join(this.root, entry.name))))) ids.push(entry.name);
    }
    return ids;
  }

  async inspect(id: string): Promise<DeviceInspection | undefined> {
    if (!isDeviceId(id)) return undefined;
    const directory = join(this.root, id);
    try {
      if (!(await stat(directory)).isDirectory()) return undefined;
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      return { id, label: undefined, fault: `the device directory cannot be read (${describeError(error)})` };
    }
    const { label, fault: labelFault } = await this.readLabel(id);
    const failedMark = await this.failedMark(id);
    return { id, label, fault: failedMark ?? labelFault };
  }

  async readEpoch(id: string): Promise<number> {
    const text = await readTextNoFollow(join(this.deviceDir(id), 'fence.json'));
    if (text === undefined) return 0;
    const { epoch } = JSON.parse(text) as { epoch?: unknown };
    if (!Number.isSafeInteger(epoch) || (epoch as number) < 0) throw new Error('fence.json holds no valid epoch');
    return epoch as number;
  }

  async writeEpoch(id: string, epoch: number): Promise<void> {
    await writeJsonAtomically(join(this.deviceDir(id), 'fence.json'), { epoch });
  }

  async readRecord(id: string, taskId: string): Promise<ExecutionRecord | undefined> {
    const directory = this.executionsDir(id);
    if (!(await ensureRealDirectory(directory, `executions/ of device ${id}`, false))) return undefined;
    const text = await readTextNoFollow(join(directory, recordFile(taskId)));
    return text === undefined ? undefined : parseRecord(JSON.parse(text));
  }

  async writeRecord(id: string, record: ExecutionRecord): Promise<void> {
    const directory = this.executionsDir(id);
    await ensureRealDirectory(directory, `executions/ of device ${id}`, true);
    await writeJsonAtomically(join(directory, recordFile(record.task_id)), record);
  }

  async volumes(id: string): Promise<VolumeEntry[]> {
    const directory = this.volumesDir(id);
    if (!(await ensureRealDirectory(directory, `volumes/ of device ${id}`, false))) return [];
    const volumes: VolumeEntry[] = [];
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      // Links and leftovers (temporary files start with a dot) are not volumes.
      if (!entry.isFile() || !isVolumeName(entry.name)) continue;
      // A volume deleted since the directory was read is no longer there, not a fault of the device.
      const size = await lstat(join(directory, entry.name)).then(
        (stats) => stats.size,
        (error: unknown) => {
          if (errorCode(error) === 'ENOENT') return undefined;
          throw error;
        },
      );
      if (size !== undefined) volumes.push({ name: entry.name, size_bytes: size });
    }
    return volumes.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async volumesIdentity(id: string): Promise<string> {
    const stats = await realDirectoryStats(this.volumesDir(id), `volumes/ of device ${id}`);
    // The birth time tells a directory made anew from an old one whose inode number it reuses.
    return stats ? `${stats.dev}:${stats.ino}:${stats.birthtimeNs}` : 'none';
  }

  async volumeSize(id: string, name: string): Promise<number | undefined> {
    const path = await this.volumePath(id, name, false);
    if (path === undefined) return undefined;
    try {
      const stats = await lstat(path);
      if (stats.isSymbolicLink()) throw linkRefused(id, name);
      if (!stats.isFile()) throw new ProblemError('invalid-task', `volume ${name} on device ${id} is not a regular file`);
      return stats.size;
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return undefined;
      throw error;
    }
  }

  async createVolume(id: string, name: string, sizeBytes: number): Promise<void> {
    const path = (await this.volumePath(id, name, true)) as string;
    const file = await open(path, createNoFollow, 0o644).catch((error: unknown) => {
      throw errorCode(error) === 'EEXIST'
        ? new ProblemError('volume-exists', `volume ${name} already exists on device ${id}`)
        : problemFromFsError(error, `creating volume ${name} on device ${id}`);
    });
    try {
      await file.truncate(sizeBytes);
      await file.sync();
    } catch (error) {
      await file.close();
      await unlink(path).catch(() => {});
      throw problemFromFsError(error, `sizing volume ${name} on device ${id}`);
    }
    await file.close();
    await syncDirectory(this.volumesDir(id));
  }

  async resizeVolume(id: string, name: string, sizeBytes: number): Promise<void> {
    const path = await this.existingVolumePath(id, name);
    const file = await open(path, writeNoFollow).catch((error: unknown) => {
      throw this.openProblem(error, id, name);
    });
    try {
      await file.truncate(sizeBytes);
      await file.sync();
    } catch (error) {
      throw problemFromFsError(error, `resizing volume ${name} on device ${id}`);
    } finally {
      await file.close();
    }
  }

  async deleteVolume(id: string, name: string): Promise<void> {
    if ((await this.volumeSize(id, name)) === undefined) throw volumeNotFound(id, name);
    await unlink(join(this.volumesDir(id), name)).catch((error: unknown) => {
      throw problemFromFsError(error, `deleting volume ${name} on device ${id}`);
    });
    await syncDirectory(this.volumesDir(id));
  }

  async copyVolume(from: { device: string; name: string }, to: { device: string; name: string }): Promise<number> {
    const sourcePath = await this.existingVolumePath(from.device, from.name);
    const targetPath = (await this.volumePath(to.device, to.name, true)) as string;
    const source = await open(sourcePath, readNoFollow).catch((error: unknown) => {
      throw this.openProblem(error, from.device, from.name);
    });
    try {
      const target = await open(targetPath, createNoFollow, 0o644).catch((error: unknown) => {
        throw errorCode(error) === 'EEXIST'
          ? new ProblemError('volume-exists', `volume ${to.name} already exists on device ${to.device}`)
          : problemFromFsError(error, `creating volume ${to.name} on device ${to.device}`);
      });
      try {
        // The size is taken once, so the copy is the source as of this moment even if it grows.
        const size = (await source.stat()).size;
        const chunk = Buffer.alloc(copyChunkBytes);
        const zeros = Buffer.alloc(copyChunkBytes);
        for (let position = 0; position < size; ) {
          const { bytesRead } = await source.read(chunk, 0, Math.min(copyChunkBytes, size - position), position);
          if (bytesRead === 0) break;
          const data = chunk.subarray(0, bytesRead);
          if (!isAllZero(data, zeros)) await target.write(data, 0, bytesRead, position);
          position += bytesRead;
        }
        await target.truncate(size);
        await target.sync();
        await target.close();
        await syncDirectory(this.volumesDir(to.device));
        return size;
      } catch (error) {
        await target.close().catch(() => {});
        await unlink(targetPath).catch(() => {});
        throw problemFromFsError(error, `copying volume ${from.name} to ${to.device}/${to.name}`);
      }
    } finally {
      await source.close();
    }
  }

  async provision(label: DeviceLabel): Promise<void> {
    if (await isDirectory(this.deviceDir(label.id))) throw new ProblemError('device-exists', `device ${label.id} already exists under ${this.root}`);
    const { created } = await provisionFileDevice(this.root, label).catch((error: unknown) => {
      throw problemFromFsError(error, `creating device ${label.id}`);
    });
    if (!created) throw new ProblemError('device-exists', `device ${label.id} already has a label`);
  }

  async readiness(): Promise<string> {
    try {
      await readdir(this.root);
      return 'ok';
    } catch (error) {
      return `the device root ${this.root} cannot be read (${describeError(error)})`;
    }
  }

  private deviceDir(id: string): string {
    if (!isDeviceId(id)) throw new ProblemError('device-not-found', `device ${JSON.stringify(id)} does not exist`);
    return join(this.root, id);
  }

  private volumesDir(id: string): string {
    return join(this.deviceDir(id), 'volumes');
  }

  private executionsDir(id: string): string {
    return join(this.deviceDir(id), 'executions');
  }

  /** The volume's path once its directory is known to be real; undefined when that directory is missing. */
  private async volumePath(id: string, name: string, create: boolean): Promise<string | undefined> {
    assertVolumeName(name);
    const directory = this.volumesDir(id);
    if (!(await ensureRealDirectory(directory, `volumes/ of device ${id}`, create))) return undefined;
    return join(directory, name);
  }

  private async existingVolumePath(id: string, name: string): Promise<string> {
    const path = await this.volumePath(id, name, false);
    if (path === undefined) throw volumeNotFound(id, name);
    return path;
  }

  private openProblem(error: unknown, id: string, name: string): unknown {
    const code = errorCode(error);
    if (code === 'ENOENT') return volumeNotFound(id, name);
    if (code === 'ELOOP') return linkRefused(id, name);
    return problemFromFsError(error, `opening volume ${name} on device ${id}`);
  }

  private async readLabel(id: string): Promise<{ label: DeviceLabel | undefined; fault: string | null }> {
    let text: string | undefined;
    try {
      text = await readTextNoFollow(join(this.root, id, 'device.json'));
    } catch (error) {
      return { label: undefined, fault: `the label cannot be read (${describeError(error)})` };
    }
    if (text === undefined) return { label: undefined, fault: 'the device has no label (device.json)' };
    let parsed: DeviceLabel | string;
    try {
      parsed = parseLabel(JSON.parse(text));
    } catch {
      return { label: undefined, fault: 'the label is not valid JSON' };
    }
    if (typeof parsed === 'string') return { label: undefined, fault: parsed };
    if (parsed.id !== id) return { label: undefined, fault: `the label names device ${parsed.id}, not ${id}` };
    return { label: parsed, fault: null };
  }

  /** The reason given by a FAILED marker, or undefined when the device is not marked. */
  private async failedMark(id: string): Promise<string | undefined> {
    const path = join(this.root, id, 'FAILED');
    try {
      await lstat(path);
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return undefined;
      return `the FAILED marker cannot be checked (${describeError(error)})`;
    }
    const text = await readTextNoFollow(path).catch(() => undefined);
    const firstLine = text?.trim().split('\n')[0]?.slice(0, 200);
    return firstLine ? `the device is marked FAILED: ${firstLine}` : 'the device is marked FAILED';
  }
}

/**
 * Creates a device under `root`: its directory, `volumes/` and its label. An existing label
 * is never replaced (a device keeps its identity), so this is safe to run at every start.
 */
export async function provisionFileDevice(root: string, label: DeviceLabel): Promise<{ created: boolean }> {
  const checked = parseLabel(label);
  if (typeof checked === 'string') throw new TypeError(`cannot provision device: ${checked}`);
  const directory = join(root, checked.id);
  await mkdir(join(directory, 'volumes'), { recursive: true });
  const labelPath = join(directory, 'device.json');
  const temporary = `${labelPath}.tmp-${process.pid}`;
  await writeJsonAtomically(temporary, checked);
  try {
    // link() fails when the label exists, so a label is written whole and only once.
    await link(temporary, labelPath);
    return { created: true };
  } catch (error) {
    if (errorCode(error) === 'EEXIST') return { created: false };
    throw error;
  } finally {
    await rm(temporary, { force: true });
  }
}

export function createFileStore(root: string): FileDeviceStore {
  return new FileDeviceStore(root);
}

function recordFile(taskId: string): string {
  if (!taskIdPattern.test(taskId)) throw new Error(`task id ${JSON.stringify(taskId)} cannot name a record`);
  return `${taskId}.json`;
}

function volumeNotFound(id: string, name: string): ProblemError {
  return new ProblemError('volume-not-found', `volume ${name} does not exist on device ${id}`);
}

function linkRefused(id: string, name: string): ProblemError {
  return new ProblemError('invalid-task', `volume ${name} on device ${id} is a symbolic link; the driver does not follow links`);
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (stats) => stats.isDirectory(),
    () => false,
  );
}
