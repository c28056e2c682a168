import type { Knex } from 'knex';

/**
 * The outbox trigger skips its NOTIFY in a transaction that set `duplex.notify_after_commit`:
 * such a writer notifies after its commit instead (repositories/tasks.ts, recordTransitions).
 *
 * Postgres serializes notifying transactions with one lock, taken at the commit and held until
 * the commit's WAL flush is done. With a NOTIFY in every transaction that wrote events, the
 * commits of dispatch rounds, task reports and submissions queued behind each other's fsync
 * (the servers' top wait under load, "Lock: object" on pg_database). A NOTIFY sent after the
 * commit, without a flush of its own, holds that lock for a moment only.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create or replace function duplex_notify_events() returns trigger language plpgsql as $$
    begin
      if current_setting('duplex.notify_after_commit', true) is distinct from 'on' then
        perform pg_notify('duplex_events', '');
      end if;
      return null;
    end
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    create or replace function duplex_notify_events() returns trigger language plpgsql as $$
    begin
      perform pg_notify('duplex_events', '');
      return null;
    end
    $$`);
}
