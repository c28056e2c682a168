import type { Knex } from 'knex';

/**
 * The catalog finds a task's reserved volume by the task: when the task ends, its `creating`
 * row becomes `present` or is released (repositories/volumes.ts). Without an index each of those
 * statements read every volume, so ending a batch of tasks cost more the more volumes the
 * catalog held (half of Postgres's time under sustained load, measured with pg_stat_statements).
 * The index holds the reservations in flight only.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`create index volumes_reserved_by_task on volumes (task_id) where state = 'creating'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists volumes_reserved_by_task');
}
