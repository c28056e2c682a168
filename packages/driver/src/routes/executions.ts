import type { DriverApi } from '@duplex/contracts';
import type { OperationHandlers } from '@duplex/shared';
import type { DriverBackend } from '../lib/types.ts';
import type { DriverMetrics } from '../metrics.ts';

type Handlers = OperationHandlers<DriverApi.operations>;

export function executionHandlers(backend: DriverBackend, metrics?: DriverMetrics): Pick<Handlers, 'execute'> {
  return {
    execute: async (request) => {
      const { task_id, kind, device, attempt, fencing } = request.body;
      const startedAt = performance.now();
      let result;
      try {
        result = await backend.execute(request.body);
      } catch (error) {
        metrics?.executed(kind, 'refused', startedAt);
        throw error;
      }
      metrics?.executed(kind, result.outcome, startedAt);
      request.log.info(
        { task_id, kind, device, attempt, token: fencing.token, epoch: fencing.epoch, outcome: result.outcome, replayed: result.replayed },
        'execution',
      );
      return result;
    },
  };
}
