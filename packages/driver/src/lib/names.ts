import { ProblemError } from '@duplex/shared';

/**
 * The contract lets any string up to 1024 characters through as a volume name, so that this
 * check lives next to the code that turns names into paths: no separators, no NUL, no
 * leading dot (so no `.`/`..`), and a bounded length.
 */
export const volumeNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const deviceIdPattern = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const clusterIdPattern = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const taskIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

export const isVolumeName = (name: string): boolean => volumeNamePattern.test(name);
export const isDeviceId = (id: string): boolean => deviceIdPattern.test(id);

/** Throws `invalid-name` (400) unless the name is a safe volume name. */
export function assertVolumeName(name: string, field = 'name'): void {
  if (isVolumeName(name)) return;
  throw new ProblemError('invalid-name', `params.${field} ${JSON.stringify(name)} is not a valid volume name`, {
    errors: [{ location: `body/params/${field}`, message: `must match ${volumeNamePattern.source}` }],
  });
}
