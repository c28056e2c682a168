import type { Knex } from 'knex';

/**
 * The dispatcher claims a server's oldest queued tasks, in submission order (created_at, id),
 * a round at a time. tasks_open_by_server holds every open task of the server, dispatched and
 * running ones too, and no id: with tens of thousands queued (a bulk submission), each round
 * read and sorted all of them to return 500, about 100 ms of Postgres per round. This index
 * holds the queued tasks only, in claim order, so a round reads the tasks it returns.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`create index tasks_queued_by_server on tasks (server_id, created_at, id) where state = 'queued'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists tasks_queued_by_server');
}
