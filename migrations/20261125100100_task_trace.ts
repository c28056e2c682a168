import type { Knex } from 'knex';

/** The W3C traceparent of the request that submitted each task, so its dispatches, runs and reports join that trace. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tasks', (t) => {
    t.text('traceparent');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tasks', (t) => {
    t.dropColumn('traceparent');
  });
}
