import type { Knex } from 'knex';

/**
 * The durable facts of duplex: servers and their leases, storage systems, clusters (with
 * leases and fencing epochs), devices, inventory versions, the inventory each server was
 * sent, agent registrations and identities, tasks with their history, the volume catalog,
 * and the event outbox.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('servers', (t) => {
    t.text('id').primary();
    t.text('url').notNullable();
    t.text('instance_id').notNullable();
    t.timestamp('started_at', { useTz: true }).notNullable();
    t.timestamp('heartbeat_at', { useTz: true }).notNullable();
    t.timestamp('lease_expires_at', { useTz: true }).notNullable();
  });

  await knex.schema.createTable('storage_systems', (t) => {
    t.text('id').primary();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('clusters', (t) => {
    t.text('storage_system_id').notNullable().references('storage_systems.id');
    t.text('id').notNullable();
    t.text('state').notNullable().defaultTo('online');
    t.bigInteger('epoch').notNullable().defaultTo(1);
    t.text('manager_url');
    t.text('manager_instance_id');
    t.timestamp('lease_expires_at', { useTz: true });
    t.bigInteger('inventory_version').notNullable().defaultTo(0);
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['storage_system_id', 'id']);
  });
  await knex.raw(`alter table clusters add constraint clusters_state_check check (state in ('online','failed','recovering'))`);

  await knex.schema.createTable('devices', (t) => {
    t.text('storage_system_id').notNullable();
    t.text('id').notNullable();
    t.text('home_cluster').notNullable();
    t.text('owner_cluster').notNullable();
    t.bigInteger('capacity_bytes').notNullable();
    t.bigInteger('used_bytes').notNullable().defaultTo(0);
    t.integer('volume_count').notNullable().defaultTo(0);
    t.text('state').notNullable();
    t.text('reason');
    t.bigInteger('epoch').notNullable().defaultTo(1);
    t.bigInteger('version').notNullable().defaultTo(1);
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['storage_system_id', 'id']);
    t.foreign(['storage_system_id', 'home_cluster']).references(['storage_system_id', 'id']).inTable('clusters');
    t.foreign(['storage_system_id', 'owner_cluster']).references(['storage_system_id', 'id']).inTable('clusters');
  });
  await knex.raw(`alter table devices add constraint devices_state_check check (state in ('available','unavailable'))`);

  // Every stored configuration/state of a cluster, as a numbered snapshot.
  await knex.schema.createTable('inventory_versions', (t) => {
    t.text('storage_system_id').notNullable();
    t.text('cluster_id').notNullable();
    t.bigInteger('version').notNullable();
    t.text('cause').notNullable();
    t.jsonb('snapshot').notNullable();
    t.timestamp('recorded_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['storage_system_id', 'cluster_id', 'version']);
    t.foreign(['storage_system_id', 'cluster_id']).references(['storage_system_id', 'id']).inTable('clusters');
  });

  // What each server has been sent by its agents: the server's own view of each cluster.
  await knex.schema.createTable('server_inventories', (t) => {
    t.text('server_id').notNullable();
    t.text('storage_system_id').notNullable();
    t.text('cluster_id').notNullable();
    t.bigInteger('version').notNullable();
    t.text('cluster_state').notNullable();
    t.bigInteger('epoch').notNullable();
    t.jsonb('devices').notNullable();
    t.timestamp('recorded_at', { useTz: true }).notNullable();
    t.text('reported_by').notNullable();
    t.timestamp('reported_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['server_id', 'storage_system_id', 'cluster_id']);
  });

  // Identities of the agent processes a cluster-manager launched.
  await knex.schema.createTable('agent_identities', (t) => {
    t.text('storage_system_id').notNullable();
    t.text('cluster_id').notNullable();
    t.text('server_id').notNullable();
    t.text('name').notNullable();
    t.integer('pid');
    t.text('state').notNullable();
    t.integer('restarts').notNullable().defaultTo(0);
    t.timestamp('started_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['storage_system_id', 'cluster_id', 'server_id']);
  });

  // Registrations of agents with their server, with leases.
  await knex.schema.createTable('agents', (t) => {
    t.text('id').primary();
    t.text('name').notNullable();
    t.text('server_id').notNullable();
    t.text('storage_system_id').notNullable();
    t.text('cluster_id').notNullable();
    t.text('url').notNullable();
    t.integer('pid').notNullable();
    t.integer('incarnation').notNullable().defaultTo(1);
    t.timestamp('started_at', { useTz: true }).notNullable();
    t.timestamp('registered_at', { useTz: true }).notNullable();
    t.timestamp('heartbeat_at', { useTz: true }).notNullable();
    t.timestamp('lease_expires_at', { useTz: true }).notNullable();
    t.unique(['server_id', 'storage_system_id', 'cluster_id', 'name']);
  });

  await knex.raw('create sequence fencing_token_seq');
  await knex.schema.createTable('tasks', (t) => {
    t.text('id').primary();
    t.text('idempotency_key').unique();
    t.text('request_hash').notNullable();
    t.text('request_id');
    t.text('kind').notNullable();
    t.text('storage_system_id').notNullable();
    t.text('device').notNullable();
    t.jsonb('params').notNullable();
    t.text('state').notNullable();
    t.integer('attempt').notNullable().defaultTo(0);
    t.bigInteger('fencing_token');
    t.text('server_id').notNullable();
    t.text('cluster_id');
    t.text('agent_id');
    t.jsonb('result');
    t.jsonb('error');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('dispatched_at', { useTz: true });
    t.timestamp('finished_at', { useTz: true });
  });
  await knex.raw(`alter table tasks add constraint tasks_state_check check (state in ('queued','dispatched','running','succeeded','failed','cancelled'))`);
  await knex.raw(`create index tasks_open_by_server on tasks (server_id, created_at) where state in ('queued','dispatched','running')`);
  await knex.raw(`create index tasks_by_creation on tasks (created_at desc, id desc)`);
  await knex.raw(`create index tasks_by_device on tasks (storage_system_id, device, created_at desc)`);

  await knex.schema.createTable('task_history', (t) => {
    t.bigIncrements('id');
    t.text('task_id').notNullable().references('tasks.id').onDelete('CASCADE');
    t.text('state').notNullable();
    t.integer('attempt').notNullable();
    t.bigInteger('fencing_token');
    t.text('agent_id');
    t.timestamp('at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['task_id', 'id']);
  });

  // The volumes tasks have created, so a task can be refused before it is queued.
  await knex.schema.createTable('volumes', (t) => {
    t.text('storage_system_id').notNullable();
    t.text('device').notNullable();
    t.text('name').notNullable();
    t.bigInteger('size_bytes').notNullable();
    t.text('state').notNullable();
    t.text('task_id');
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['storage_system_id', 'device', 'name']);
  });
  await knex.raw(`alter table volumes add constraint volumes_state_check check (state in ('creating','present','deleting'))`);

  await knex.schema.createTable('events', (t) => {
    t.bigIncrements('id');
    t.text('type').notNullable();
    t.text('storage_system_id');
    t.text('task_id');
    t.jsonb('payload').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['type', 'id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['events', 'volumes', 'task_history', 'tasks', 'agents', 'agent_identities', 'server_inventories', 'inventory_versions', 'devices', 'clusters', 'storage_systems', 'servers']) {
    await knex.schema.dropTableIfExists(table);
  }
  await knex.raw('drop sequence if exists fencing_token_seq');
}
