import { ProblemError } from '@duplex/shared';
import { assertVolumeName, taskIdPattern } from './names.ts';
import type { ExecutionKind, ExecutionRequest } from './types.ts';

/** An execution's work, with exactly the parameters its kind needs, names already checked. */
export type Operation =
  | { kind: 'volume.create'; name: string; size_bytes: number }
  | { kind: 'volume.delete'; name: string }
  | { kind: 'volume.resize'; name: string; size_bytes: number }
  | { kind: 'volume.copy'; name: string; target_device: string; target_name: string }
  | { kind: 'device.format' }
  | { kind: 'device.probe' };

type Params = ExecutionRequest['params'];
type ParamName = keyof Params;

const paramsOf: Record<ExecutionKind, { required: ParamName[]; optional: ParamName[] }> = {
  'volume.create': { required: ['name', 'size_bytes'], optional: [] },
  'volume.delete': { required: ['name'], optional: [] },
  'volume.resize': { required: ['name', 'size_bytes'], optional: [] },
  'volume.copy': { required: ['name', 'target_name'], optional: ['target_device'] },
  'device.format': { required: [], optional: [] },
  'device.probe': { required: [], optional: [] },
};

/** The devices an execution works on, in the order they are held: its device, and a copy's other target. */
export function devicesOf(request: ExecutionRequest): string[] {
  const target = request.kind === 'volume.copy' ? request.params.target_device : undefined;
  return target && target !== request.device ? [request.device, target] : [request.device];
}

/**
 * Checks an execution request beyond what the contract can say (which parameters each kind
 * takes, and safe names) before anything touches a device. Refusals are 400 problems.
 */
export function parseOperation(request: ExecutionRequest): Operation {
  if (!taskIdPattern.test(request.task_id)) {
    throw invalid('task_id', `must match ${taskIdPattern.source}`);
  }
  const { kind, params } = request;
  const allowed = paramsOf[kind];
  for (const name of allowed.required) {
    if (params[name] === undefined) throw invalid(`params/${name}`, `is required for ${kind}`);
  }
  for (const name of Object.keys(params) as ParamName[]) {
    if (!allowed.required.includes(name) && !allowed.optional.includes(name)) {
      throw invalid(`params/${name}`, `is not a parameter of ${kind}`);
    }
  }
  const name = params.name ?? '';
  const size = params.size_bytes ?? 0;
  switch (kind) {
    case 'volume.create':
    case 'volume.resize':
      assertVolumeName(name);
      return { kind, name, size_bytes: size };
    case 'volume.delete':
      assertVolumeName(name);
      return { kind, name };
    case 'volume.copy': {
      const targetName = params.target_name ?? '';
      assertVolumeName(name);
      assertVolumeName(targetName, 'target_name');
      return { kind, name, target_device: params.target_device ?? request.device, target_name: targetName };
    }
    case 'device.format':
    case 'device.probe':
      return { kind };
  }
}

function invalid(location: string, message: string): ProblemError {
  return new ProblemError('validation-failed', `${location} ${message}`, {
    errors: [{ location: `body/${location}`, message }],
  });
}
