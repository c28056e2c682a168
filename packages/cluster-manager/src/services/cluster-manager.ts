import { randomUUID } from 'node:crypto';
import type { DriverApi } from '@duplex/contracts';
import { backoffDelayMs, bearer, isHealthy, JsonClient, KeyedLock, ProblemError, problemCodeOf, sleep, type Database, type ProblemDocument } from '@duplex/shared';
import type { Knex } from 'knex';
import type { FastifyBaseLogger } from 'fastify';
import type { ClusterManagerConfig } from '../config.ts';
import type { Inventory } from '../lib/inventory.ts';
import type { ClusterManagerMetrics } from '../metrics.ts';
import { ensureCluster, reinstate, retire, setAdminState, storedDevice, storeInventory } from '../repositories/cluster-store.ts';
import { failBack, peersOf, renewClusterLease, takeOverPeer, type ClusterLeaseRow } from '../repositories/ownership.ts';
import { AgentSupervisor } from './agent-supervisor.ts';

type DeviceReportList = DriverApi.components['schemas']['DeviceReportList'];
type DeviceReport = DriverApi.components['schemas']['DeviceReport'];
type DeviceWatch = DriverApi.components['schemas']['DeviceWatch'];

const watchWaitMs = 20_000;
/** How long discovery waits for the driver once the cluster-manager is up. */
const laterDriverWaitMs = 2_000;

/**
 * The cluster's life: at launch it has the driver discover the devices, stores the result
 * as the cluster's configuration and state, launches the agents, and tells them whenever a
 * new inventory version is stored. It holds the cluster's lease in Postgres (and fences its
 * agents when it cannot), watches the peer cluster and takes its devices over when the
 * peer's lease runs out and its health check fails, and hands them back on failback.
 */
export class ClusterManager {
  readonly supervisor: AgentSupervisor;
  inventory: Inventory | undefined;
  state: ClusterLeaseRow['state'] | undefined;
  private readonly driver: JsonClient;
  /** Its own connection: a long poll would otherwise hold one of the driver pool's. */
  private readonly driverWatch: JsonClient;
  /** One inventory store at a time, so an older discovery never lands after a newer one. */
  private readonly storing = new KeyedLock();
  private readonly instanceId = randomUUID();
  private readonly abort = new AbortController();
  private leaseExpiresAt = 0;
  private fenced = false;
  private recoveringSince: number | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private watching = false;

  constructor(
    private readonly config: ClusterManagerConfig,
    private readonly db: Database,
    private readonly log: FastifyBaseLogger,
    private readonly metrics?: ClusterManagerMetrics,
  ) {
    const clusterCredential = bearer(config.CLUSTER_TOKEN);
    this.driver = new JsonClient(config.DRIVER_URL, { name: 'driver', timeoutMs: 10_000, headers: clusterCredential });
    this.driverWatch = new JsonClient(config.DRIVER_URL, { name: 'driver', timeoutMs: watchWaitMs + 5_000, connections: 1, headers: clusterCredential });
    this.supervisor = new AgentSupervisor(config, db, log, metrics);
  }

  async start(): Promise<void> {
    const { STORAGE_SYSTEM_ID: storageSystemId, CLUSTER_ID: clusterId } = this.config;
    await ensureCluster(this.db, { storageSystemId, clusterId, managerUrl: this.config.CM_PUBLIC_URL, instanceId: this.instanceId });
    await this.renewLease();
    // The lease is kept from here on: a launch discovery that waits for a slow driver must not
    // let it run out, or the peer takes the devices over from a cluster that is only starting.
    this.timers.push(setInterval(() => void this.renewLease(), Math.max(10, Math.floor(this.config.CLUSTER_LEASE_TTL_MS / 3))));
    await this.refreshInventory('launch', undefined, this.config.DRIVER_WAIT_MS);
    this.supervisor.start();
    this.timers.push(
      setInterval(() => void this.watchPeers(), this.config.PEER_CHECK_INTERVAL_MS),
      setInterval(() => void this.refreshQuietly('usage refresh'), this.config.USAGE_REFRESH_INTERVAL_MS),
    );
    void this.watchDevices();
  }

  /**
   * Follows the driver's probes with a long poll: each new generation (a device gone, back,
   * new, marked failed, resized) is discovered and stored at once. A new driver run counts as
   * a change, since its devices may have changed while it was down.
   */
  private async watchDevices(): Promise<void> {
    let seen: { instanceId: string; generation: number } | undefined;
    for (let failures = 0; !this.abort.signal.aborted; ) {
      try {
        const query = seen ? `?after=${seen.generation}&instance_id=${encodeURIComponent(seen.instanceId)}&wait_ms=${watchWaitMs}` : '?wait_ms=0';
        const response = await this.driverWatch.call<DeviceWatch>('GET', `/v1/device-changes${query}`);
        if (response.status !== 200) throw new Error(`the driver answered ${response.status}`);
        const { instance_id: instanceId, generation } = response.body;
        const isNews = seen !== undefined && (seen.instanceId !== instanceId || seen.generation < generation);
        if (seen && seen.instanceId !== instanceId) this.log.info({ instance_id: instanceId }, 'the driver restarted: rediscovering the devices');
        seen = { instanceId, generation };
        failures = 0;
        if (isNews) await this.refreshQuietly('device probe');
      } catch (error) {
        if (this.abort.signal.aborted) return;
        if (failures % 20 === 0) this.log.warn({ err: (error as Error).message }, 'cannot follow the driver\'s device probes; retrying');
        failures += 1;
        await sleep(backoffDelayMs(failures, 100, 2_000), this.abort.signal).catch(() => {});
      }
    }
  }

  private async refreshQuietly(cause: string): Promise<void> {
    try {
      await this.refreshInventory(cause);
    } catch (error) {
      if (!this.abort.signal.aborted) this.log.warn({ err: (error as Error).message, cause }, 'could not store the inventory');
    }
  }

  get holdsLease(): boolean {
    return this.leaseExpiresAt > Date.now();
  }

  /** Renews the lease; a cluster-manager that cannot renew in time fences its agents until it can. */
  private async renewLease(): Promise<void> {
    const attemptedAt = Date.now();
    try {
      const row = await renewClusterLease(
        this.db,
        { storageSystemId: this.config.STORAGE_SYSTEM_ID, clusterId: this.config.CLUSTER_ID, instanceId: this.instanceId, managerUrl: this.config.CM_PUBLIC_URL },
        this.config.CLUSTER_LEASE_TTL_MS,
      );
      this.leaseExpiresAt = attemptedAt + this.config.CLUSTER_LEASE_TTL_MS;
      this.setFenced(false);
      const previous = this.state;
      this.state = row.state;
      if (row.state === 'recovering') this.recoveringSince ??= Date.now();
      else this.recoveringSince = undefined;
      if (previous !== undefined && previous !== row.state && this.inventory) await this.refreshInventory(`state ${row.state}`, undefined, this.config.DRIVER_WAIT_MS);
      await this.maybeFailBack();
    } catch (error) {
      if (!this.holdsLease) this.setFenced(true);
      this.metrics?.leaseRenewFailed();
      this.log.warn({ err: (error as Error).message, fenced: this.fenced }, 'could not renew the cluster lease');
    }
  }

  private setFenced(fenced: boolean): void {
    if (this.fenced === fenced) return;
    this.fenced = fenced;
    this.log.warn({ fenced }, fenced ? 'the cluster lease ran out: agents refuse tasks' : 'the cluster lease is held again');
    this.supervisor.setFenced(fenced);
  }

  private async maybeFailBack(): Promise<void> {
    const after = this.config.FAILBACK_AUTO_AFTER_MS;
    if (after > 0 && this.recoveringSince !== undefined && Date.now() - this.recoveringSince >= after) {
      this.log.info({ stable_ms: Date.now() - this.recoveringSince }, 'recovered for long enough: failing back');
      await this.failBack();
    }
  }

  /** A peer whose lease ran out and whose health check fails loses its devices to this cluster. */
  private async watchPeers(): Promise<void> {
    if (this.watching || !this.holdsLease || this.state !== 'online') return;
    this.watching = true;
    try {
      const now = Date.now();
      for (const peer of await peersOf(this.db, this.config.STORAGE_SYSTEM_ID, this.config.CLUSTER_ID)) {
        if (peer.state === 'failed' || !peer.lease_expires_at || peer.lease_expires_at.getTime() > now) continue;
        if (peer.manager_url && (await isHealthy(peer.manager_url, this.config.PEER_HEALTH_TIMEOUT_MS))) continue;
        const taken = await takeOverPeer(this.db, this.config.STORAGE_SYSTEM_ID, this.config.CLUSTER_ID, peer.id);
        if (!taken) continue;
        this.metrics?.takeover();
        this.log.warn({ peer: peer.id, epoch: taken.epoch, devices: taken.devices }, 'the peer cluster is lost: took over its devices');
        await this.refreshInventory(`takeover of ${peer.id}`, undefined, this.config.DRIVER_WAIT_MS);
      }
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'peer check failed');
    } finally {
      this.watching = false;
    }
  }

  /** Takes the home devices back from the peer (the cluster must be recovering) and has the peer rescan. */
  async failBack(): Promise<Inventory> {
    const moved = await failBack(this.db, this.config.STORAGE_SYSTEM_ID, this.config.CLUSTER_ID);
    if (!moved) throw new ProblemError('cluster-not-recovering', `cluster ${this.config.CLUSTER_ID} is ${this.state ?? 'starting'}, not recovering`);
    this.metrics?.failback();
    this.state = 'online';
    this.recoveringSince = undefined;
    this.log.info({ epoch: moved.epoch, devices: moved.devices }, 'failed back: home devices are owned here again');
    const inventory = await this.refreshInventory('failback', undefined, this.config.DRIVER_WAIT_MS);
    for (const peer of await peersOf(this.db, this.config.STORAGE_SYSTEM_ID, this.config.CLUSTER_ID)) {
      if (!peer.manager_url) continue;
      const client = new JsonClient(peer.manager_url, { name: `cluster-manager ${peer.id}`, timeoutMs: 5_000, connections: 1, headers: bearer(this.config.SERVICE_TOKEN) });
      try {
        await client.call('POST', '/v1/inventory:refresh');
      } catch (error) {
        // The peer rescans on its own next state change; its servers keep routing by epoch meanwhile.
        this.log.warn({ peer: peer.id, err: (error as Error).message }, 'could not ask the peer to rescan after failback');
      } finally {
        await client.close();
      }
    }
    return inventory;
  }

  /** Discovers the devices again and stores (and broadcasts) a new version if anything changed. */
  async refreshInventory(
    cause: string,
    adminChange?: (trx: Knex.Transaction) => Promise<void>,
    driverWaitMs = laterDriverWaitMs,
  ): Promise<Inventory> {
    const stored = await this.storing.run(['inventory'], async () => {
      const discovered = await this.discover(driverWaitMs);
      const result = await storeInventory(this.db, this.config.STORAGE_SYSTEM_ID, this.config.CLUSTER_ID, discovered.items, cause, adminChange);
      this.inventory = result.inventory;
      return result;
    });
    const { inventory, changed, changes } = stored;
    if (changed) {
      const described = changes.map((change) => `${change.device_id}: ${change.changes.join('+')}${change.state ? ` -> ${change.state}` : ''}`);
      this.log.info({ version: inventory.version, cause, devices: inventory.devices.length, changes: described }, 'inventory stored');
      await this.broadcast(inventory.version);
    }
    return inventory;
  }

  /** An operator takes a device out of service (`offline`) or puts it back (`available`). */
  async setDeviceState(deviceId: string, state: 'offline' | 'available', reason: string | undefined): Promise<Inventory> {
    const { STORAGE_SYSTEM_ID: storageSystemId, CLUSTER_ID: clusterId } = this.config;
    const adminState = state === 'offline' ? 'offline' : 'in_service';
    return this.refreshInventory(`operator set ${deviceId} ${state}`, setAdminState(storageSystemId, clusterId, deviceId, adminState, reason ?? null));
  }

  /** An operator retires an offline device: out of the configuration, data left in place. */
  async retireDevice(deviceId: string): Promise<Inventory> {
    const { STORAGE_SYSTEM_ID: storageSystemId, CLUSTER_ID: clusterId } = this.config;
    return this.refreshInventory(`operator retired ${deviceId}`, retire(storageSystemId, clusterId, deviceId));
  }

  /**
   * An operator adds a device homed in this cluster: a retired one comes back, an unknown id
   * is created on the driver. A device another cluster owns, or one in the configuration
   * already, is refused.
   */
  async addDevice(deviceId: string, capacityBytes: number): Promise<Inventory> {
    const { STORAGE_SYSTEM_ID: storageSystemId, CLUSTER_ID: clusterId } = this.config;
    const existing = await storedDevice(this.db, storageSystemId, deviceId);
    if (existing && existing.owner_cluster !== clusterId) {
      throw new ProblemError('device-exists', `device '${deviceId}' belongs to cluster ${existing.owner_cluster}`);
    }
    if (existing && existing.admin_state !== 'retired') throw new ProblemError('device-exists', `device '${deviceId}' is already in the configuration`);
    if (existing) return this.refreshInventory(`operator reinstated ${deviceId}`, reinstate(storageSystemId, deviceId));
    const response = await this.driver.call<DeviceReport & ProblemDocument>('POST', '/v1/devices', {
      body: { id: deviceId, home_cluster: clusterId, capacity_bytes: capacityBytes },
    });
    if (response.status !== 201) {
      const code = problemCodeOf(response.body ?? {});
      if (response.status < 500 && code) throw new ProblemError(code, response.body.detail ?? `the driver refused the device (${response.status})`);
      throw new ProblemError('upstream-unavailable', `the driver answered ${response.status} to creating device '${deviceId}'`);
    }
    return this.refreshInventory(`operator added ${deviceId}`);
  }

  /**
   * Has the driver list the devices, waiting up to `waitMs` for it: DRIVER_WAIT_MS at launch,
   * while the driver may still be starting; otherwise (probes, operators' requests) briefly, so
   * a driver that is down is reported as unavailable instead of holding the caller.
   */
  private async discover(waitMs: number): Promise<DeviceReportList> {
    const deadline = Date.now() + waitMs;
    for (let attempt = 0; ; attempt += 1) {
      try {
        const response = await this.driver.call<DeviceReportList>('GET', '/v1/devices');
        if (response.status === 200) return response.body;
        this.log.warn({ status: response.status }, 'the driver could not discover the devices');
      } catch (error) {
        if (attempt % 20 === 0) this.log.info({ err: (error as Error).message }, 'waiting for the driver');
      }
      if (Date.now() > deadline || this.abort.signal.aborted) {
        throw new ProblemError('upstream-unavailable', `the driver at ${this.config.DRIVER_URL} did not answer discovery within ${waitMs} ms`);
      }
      await sleep(backoffDelayMs(attempt, 50, 1_000), this.abort.signal);
    }
  }

  /** Tells every running agent that a new version is stored; each then reports it to its server. */
  private async broadcast(version: number): Promise<void> {
    const dropRate = Number(this.config.FAULT_DROP_BROADCAST_RATE);
    await Promise.all(
      this.supervisor.urls().map(async (url) => {
        if (dropRate > 0 && Math.random() < dropRate) {
          this.log.warn({ url, version }, 'broadcast dropped (fault injection)');
          this.metrics?.broadcast('dropped');
          return;
        }
        const client = new JsonClient(url, { name: 'agent', timeoutMs: 2_000, connections: 1, headers: bearer(this.config.CLUSTER_TOKEN) });
        try {
          const response = await client.call('POST', '/v1/inventory-changes', { body: { version } });
          this.metrics?.broadcast(response.status === 202 ? 'delivered' : 'refused');
        } catch (error) {
          this.metrics?.broadcast('failed');
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
    for (const timer of this.timers) clearInterval(timer);
    await this.supervisor.stop();
    await Promise.all([this.driver.close(), this.driverWatch.destroy()]);
  }
}
