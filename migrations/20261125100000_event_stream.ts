import type { Knex } from 'knex';

/**
 * The event outbox as a stream that can be resumed without gaps, and agents' lost leases.
 *
 * Outbox ids come from a sequence, so a transaction that drew a lower id can commit after one
 * that drew a higher id: a reader that remembered "the highest id seen" would skip it. Each
 * event therefore records `tx_id`, the id of the transaction that wrote it, and `stream_xid`,
 * the later of that id and the snapshot's xmax when it was written (one past the newest
 * transaction that had ended). The stream is ordered by (stream_xid, id), and an event is
 * delivered once its stream_xid is below the xmin of the reader's snapshot:
 * - every transaction below xmin has ended, and no event's stream_xid is below its own
 *   transaction's id, so no event can appear below a delivered one later: no gaps;
 * - an event written after another's transaction committed has a stream_xid at least that
 *   transaction's id + 1 (and at least its snapshot's xmax), so it comes after it: changes of
 *   one task, which serialize on the task's row, stream in the order they were committed.
 *   Ordering by tx_id alone would not give this, since a transaction may get its id before
 *   another and write its change after that one commits. For this to hold, an event must be
 *   inserted by a statement after the one that waited for the row it reports on, as every
 *   writer does (a new statement takes a new snapshot).
 *
 * A statement-level trigger notifies `duplex_events` on every insert, so servers wake up at
 * the commit instead of at their next poll.
 *
 * `agents.lost_at` marks an agent whose lease ran out (or whose incarnation was replaced) and
 * for which `agent.lost` has been written; a new registration or lease renewal clears it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table events add column tx_id xid8 not null default pg_current_xact_id()');
  await knex.raw('alter table events add column stream_xid xid8 not null default greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot()))');
  await knex.raw('create index events_by_position on events (stream_xid, id)');
  await knex.raw('create index events_by_task on events (task_id, stream_xid, id) where task_id is not null');
  await knex.raw(`
    create function duplex_notify_events() returns trigger language plpgsql as $$
    begin
      perform pg_notify('duplex_events', '');
      return null;
    end
    $$`);
  await knex.raw('create trigger events_notify after insert on events for each statement execute function duplex_notify_events()');

  await knex.schema.alterTable('agents', (t) => {
    t.timestamp('lost_at', { useTz: true });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.dropColumn('lost_at');
  });
  await knex.raw('drop trigger if exists events_notify on events');
  await knex.raw('drop function if exists duplex_notify_events()');
  await knex.raw('drop index if exists events_by_task');
  await knex.raw('drop index if exists events_by_position');
  await knex.raw('alter table events drop column if exists stream_xid');
  await knex.raw('alter table events drop column if exists tx_id');
}
