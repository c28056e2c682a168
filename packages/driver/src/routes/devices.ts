import type { DriverApi } from '@duplex/contracts';
import type { OperationHandlers } from '@duplex/shared';
import type { DeviceWatch } from '../lib/device-watch.ts';
import type { DriverBackend } from '../lib/types.ts';

type Handlers = OperationHandlers<DriverApi.operations>;

export function deviceHandlers(
  backend: DriverBackend,
  watch: DeviceWatch,
): Pick<Handlers, 'discoverDevices' | 'probeDevice' | 'provisionDevice' | 'watchDevices'> {
  return {
    discoverDevices: async () => ({ items: await backend.discover() }),
    probeDevice: async (request) => backend.probe(request.params.id),
    provisionDevice: async (request, reply) => {
      const report = await backend.provision(request.body);
      request.log.info({ device: report.id, home_cluster: report.home_cluster, capacity_bytes: report.capacity_bytes }, 'device created');
      // Waiters learn of the new device now rather than at the next probe.
      await watch.probe();
      return reply.code(201).send(report);
    },
    watchDevices: async (request) => {
      const { after = 0, instance_id: instanceId, wait_ms: waitMs = 25_000 } = request.query;
      // A caller that goes away stops waiting; its socket closing aborts the long poll.
      const abort = new AbortController();
      const onClose = () => abort.abort();
      request.raw.once('close', onClose);
      try {
        return await watch.changesAfter(after, instanceId, waitMs, abort.signal);
      } finally {
        request.raw.off('close', onClose);
      }
    },
  };
}
