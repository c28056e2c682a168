import { randomUUID } from 'node:crypto';
import type { DriverApi } from '@duplex/contracts';
import { backoffDelayMs, JsonClient, sleep, type Database } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { ClusterManagerConfig } from '../config.ts';
import type { Inventory } from '../lib/inventory.ts';
import { ensureCluster, storeInventory } from '../repositories/cluster-store.ts';
import { AgentSupervisor } from './agent-supervisor.ts';

type DeviceReportList = DriverApi.components['schemas']['DeviceReportList'];

/**
 * The cluster's life: at launch it has the driver discover the devices, stores the result
 * as the cluster's configuration and state, launches the agents, and tells them whenever a
 * new inventory version is stored.
 */
export class ClusterManager {
  readonly supervisor: AgentSupervisor;
  inventory: Inventory | undefined;
  private readonly driver: JsonClient;
  private readonly instanceId = randomUUID();
  private readonly abort = new AbortController();

  constructor(
    private readonly config: ClusterManagerConfig,
    private readonly db: Database,
    private readonly log: FastifyBaseLogger,
  ) {
    this.driver = new JsonClient(config.DRIVER_URL, { name: 'driver', timeoutMs: 10_000 });
    this.supervisor = new AgentSupervisor(config, db, log);
  }

  async start(): Promise<void> {
    const { STORAGE_SYSTEM_ID: storageSystemId, CLUSTER_ID: clusterId } = this.config;
    await ensureCluster(this.db, { storageSystemId, clusterId, managerUrl: this.config.CM_PUBLIC_URL, instanceId: this.instanceId });
    await this.refreshInventory('launch');
    this.supervisor.start();
  }

  /** Discovers the devices again and stores (and broadcasts) a new version if anything changed. */
  async refreshInventory(cause: string): Promise<Inventory> {
    const discovered = await this.discover();
    const { inventory, changed } = await storeInventory(this.db, this.config.STORAGE_SYSTEM_ID, this.config.CLUSTER_ID, discovered.items, cause);
    this.inventory = inventory;
    this.log.info({ version: inventory.version, changed, devices: inventory.devices.length, cause }, 'inventory stored');
    if (changed) await this.broadcast(inventory.version);
    return inventory;
  }

  private async discover(): Promise<DeviceReportList> {
    const deadline = Date.now() + this.config.DRIVER_WAIT_MS;
    for (let attempt = 0; ; attempt += 1) {
      try {
        const response = await this.driver.call<DeviceReportList>('GET', '/v1/devices');
        if (response.status === 200) return response.body;
        this.log.warn({ status: response.status }, 'the driver could not discover the devices');
      } catch (error) {
        if (attempt % 20 === 0) this.log.info({ err: (error as Error).message }, 'waiting for the driver');
      }
      if (Date.now() > deadline || this.abort.signal.aborted) throw new Error(`the driver at ${this.config.DRIVER_URL} did not answer discovery`);
      await sleep(backoffDelayMs(attempt, 50, 1_000), this.abort.signal);
    }
  }

  /** Tells every running agent that a new version is stored; each then reports it to its server. */
  private async broadcast(version: number): Promise<void> {
    await Promise.all(
      this.supervisor.urls().map(async (url) => {
        const client = new JsonClient(url, { name: 'agent', timeoutMs: 2_000, connections: 1 });
        try {
          await client.call('POST', '/v1/inventory-changes', { body: { version } });
        } catch (error) {
          // The agent's next heartbeat finds its server behind and reports then.
          this.log.warn({ url, err: (error as Error).message }, 'broadcast to an agent failed');
        } finally {
          await client.close();
        }
      }),
    );
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.supervisor.stop();
    await this.driver.close();
  }
}
