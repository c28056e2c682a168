import type { DriverApi } from '@duplex/contracts';
import type { OperationHandlers } from '@duplex/shared';
import type { DriverBackend } from '../lib/types.ts';

type Handlers = OperationHandlers<DriverApi.operations>;

export function executionHandlers(backend: DriverBackend): Pick<Handlers, 'execute'> {
  return {
    execute: async (request) => {
      const { task_id, kind, device, attempt, fencing } = request.body;
      const result = await backend.execute(request.body);
      request.log.info(
        { task_id, kind, device, attempt, token: fencing.token, epoch: fencing.epoch, outcome: result.outcome, replayed: result.replayed },
        'execution',
      );
      return result;
    },
  };
}
