import type { Knex } from 'knex';

/**
 * Agents' rows are rewritten at every heartbeat (thousands a second on a busy server) and only
 * in columns no index holds (heartbeat_at, lease_expires_at, lost_at). Room left on each page
 * lets the new version stay on the same page as a HOT update, with no index entry to add and
 * the old version pruned in place. The table is small (one row per agent), so the room is cheap.
 * It applies to the pages written from now on, and to all of them at the next rewrite.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table agents set (fillfactor = 70)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('alter table agents reset (fillfactor)');
}
