import type { Knex } from 'knex';

/**
 * task_history loses its foreign key to tasks. Its check ran once per history row (a query and
 * a row lock on the task each time): about half the cost of writing a batch's history, and a
 * tenth of the Postgres CPU of accepting a task. Every history row is written in the
 * transaction that inserted or changed its task (repositories/submissions.ts and tasks.ts), and
 * no task is ever deleted (a refused submission is never inserted), so neither the check nor
 * its ON DELETE CASCADE has anything left to catch.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('task_history', (t) => {
    t.dropForeign(['task_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('task_history', (t) => {
    t.foreign('task_id').references('tasks.id').onDelete('CASCADE');
  });
}
