import { randomBytes } from 'node:crypto';
import { constants, type BigIntStats } from 'node:fs';
import { lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ProblemError } from '@duplex/shared';

/** Opening flags that never follow a symbolic link at the last path component. */
export const readNoFollow = constants.O_RDONLY | constants.O_NOFOLLOW;
export const writeNoFollow = constants.O_RDWR | constants.O_NOFOLLOW;
/** Like 'wx', and O_EXCL already refuses an existing link; O_NOFOLLOW says so explicitly. */
export const createNoFollow = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** The errno code of a system error (ENOENT, ELOOP...); a ProblemError's code is not one. */
export const errorCode = (error: unknown): string | undefined =>
  error instanceof Error && !(error instanceof ProblemError) && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;

export const describeError = (error: unknown): string =>
  errorCode(error) ?? (error instanceof Error ? error.message : String(error));

/**
 * Writes JSON so that a reader sees the old content or the new, never a torn file: a
 * synced temporary file renamed over the target, then the directory synced so the rename
 * survives a crash.
 */
export async function writeJsonAtomically(path: string, value: unknown): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const file = await open(temporary, createNoFollow, 0o644);
  try {
    await file.writeFile(`${JSON.stringify(value)}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(dirname(path));
}

export async function syncDirectory(path: string): Promise<void> {
  const directory = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/** The file's text, or undefined when it does not exist; a link is refused (ELOOP). */
export async function readTextNoFollow(path: string): Promise<string | undefined> {
  let file;
  try {
    file = await open(path, readNoFollow);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  try {
    return await file.readFile('utf8');
  } finally {
    await file.close();
  }
}

/**
 * Makes sure a directory the driver writes into is a real directory, not a link that would
 * send the writes elsewhere. With `create`, a missing one is made; otherwise it answers false.
 */
export async function ensureRealDirectory(path: string, what: string, create: boolean): Promise<boolean> {
  if (await realDirectoryStats(path, what)) return true;
  if (!create) return false;
  await mkdir(path);
  return true;
}

/** A real directory's stats, or undefined when it does not exist; a link or a file is refused. */
export async function realDirectoryStats(path: string, what: string): Promise<BigIntStats | undefined> {
  let stats: BigIntStats;
  try {
    stats = await lstat(path, { bigint: true });
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  if (stats.isSymbolicLink()) {
    throw new ProblemError('device-unavailable', `${what} is a symbolic link; the driver does not follow links`);
  }
  if (!stats.isDirectory()) throw new ProblemError('device-unavailable', `${what} is not a directory`);
  return stats;
}

/** Device-level file system failures become the problems they mean; others stay unexpected. */
export function problemFromFsError(error: unknown, what: string): unknown {
  switch (errorCode(error)) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return new ProblemError('insufficient-capacity', `${what}: the file system has no room (${errorCode(error)})`, { cause: error });
    case 'EIO':
    case 'EROFS':
    case 'EACCES':
    case 'EPERM':
      return new ProblemError('device-unavailable', `${what}: the device refused the write (${errorCode(error)})`, { cause: error });
    default:
      return error;
  }
}

/** True when every byte is zero; a chunk like that stays a hole in a sparse copy. */
export function isAllZero(chunk: Buffer, zeros: Buffer): boolean {
  return chunk.equals(zeros.subarray(0, chunk.length));
}
