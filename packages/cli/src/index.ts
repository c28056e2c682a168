export { checkTopology, loadTopology, TopologyError, type Topology } from './topology.ts';
export { prepareTopology, processSpecs, stopChild, waitUntilReady, type ProcessSpec, type TopologySecrets } from './launcher.ts';
