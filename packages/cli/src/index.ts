export { checkTopology, loadTopology, TopologyError, type Topology } from './topology.ts';
export { prepareTopology, processSpecs, stopChild, tlsSettingsOf, waitUntilReady, type ProcessSpec, type TopologySecrets } from './launcher.ts';
