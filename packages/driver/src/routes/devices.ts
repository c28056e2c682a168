import type { DriverApi } from '@duplex/contracts';
import type { OperationHandlers } from '@duplex/shared';
import type { DriverBackend } from '../lib/types.ts';

type Handlers = OperationHandlers<DriverApi.operations>;

export function deviceHandlers(backend: DriverBackend): Pick<Handlers, 'discoverDevices' | 'probeDevice'> {
  return {
    discoverDevices: async () => ({ items: await backend.discover() }),
    probeDevice: async (request) => backend.probe(request.params.id),
  };
}
