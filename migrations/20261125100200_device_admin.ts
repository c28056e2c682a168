import type { Knex } from 'knex';

// Operators take devices out of service, retire them and add them; each change is kept with
// the inventory version it produced.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('devices', (t) => {
    t.text('admin_state').notNullable().defaultTo('in_service');
    t.text('admin_reason');
  });
  await knex.raw(`alter table devices add constraint devices_admin_state_check check (admin_state in ('in_service', 'offline', 'retired'))`);
  await knex.raw('alter table devices drop constraint devices_state_check');
  await knex.raw(`alter table devices add constraint devices_state_check check (state in ('available', 'unavailable', 'offline', 'retired'))`);
  await knex.schema.alterTable('inventory_versions', (t) => {
    t.jsonb('changes').notNullable().defaultTo('[]');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('inventory_versions', (t) => {
    t.dropColumn('changes');
  });
  await knex.raw('alter table devices drop constraint devices_state_check');
  await knex.raw(`alter table devices add constraint devices_state_check check (state in ('available', 'unavailable'))`);
  await knex.schema.alterTable('devices', (t) => {
    t.dropColumn('admin_reason');
    t.dropColumn('admin_state');
  });
}
