import type { Knex } from 'knex';

/**
 * Accepting a batch of submissions (repositories/submissions.ts) becomes a function, so that
 * Postgres plans its statement once per connection rather than at every call. Sent as a
 * statement of its own, it was planned at each execution: about 1 ms of Postgres's CPU per
 * call, as much as running it (pg_stat_statements under 1,000 single submissions/s, four tasks
 * a call).
 *
 * A plan kept for many calls must not depend on the statistics of the moment it was made: a
 * plan made while `tasks` or `volumes` were nearly empty (the first submissions after an
 * install) would read them whole at every call once they are large. So the function plans
 * with seq scans priced out (enable_seqscan off): each lookup of a key, a volume or a
 * reservation goes by its index whatever the statistics say, and the plan is generic (made
 * once, for any arrays) rather than remade at each call.
 *
 * What the function does, and why, is told at acceptSubmissions. A change to it is a new
 * migration that replaces it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function duplex_accept_submissions(
      p_id text[], p_idempotency_key text[], p_request_hash text[], p_request_id text[], p_traceparent text[], p_kind text[],
      p_storage_system_id text[], p_device text[], p_params text[], p_server_id text[],
      p_must_device text[], p_must_name text[], p_mark_deleting boolean[], p_reserve_device text[], p_reserve_name text[], p_reserve_size bigint[])
    returns table (taken_keys text[], missing_ids text[], marked_ids text[], reserved_ids text[], created_ms double precision)
    language plpgsql
    set enable_seqscan = off
    set plan_cache_mode = force_generic_plan
    as $$
    #variable_conflict use_column
    begin
      return query
      with given as (
         select * from unnest(p_id, p_idempotency_key, p_request_hash, p_request_id, p_traceparent, p_kind, p_storage_system_id, p_device, p_params, p_server_id,
                              p_must_device, p_must_name, p_mark_deleting, p_reserve_device, p_reserve_name, p_reserve_size) with ordinality
           as i(id, idempotency_key, request_hash, request_id, traceparent, kind, storage_system_id, device, params, server_id,
                must_device, must_name, mark_deleting, reserve_device, reserve_name, reserve_size, position)
       ), taken as (
         select t.idempotency_key from given g join tasks t on t.idempotency_key = g.idempotency_key
       ), input as (
         select * from given g where not exists (select 1 from taken where taken.idempotency_key = g.idempotency_key)
       ), missing as (
         select i.id from input i
          where i.must_name is not null and not i.mark_deleting
            and not exists (select 1 from volumes v where v.storage_system_id = i.storage_system_id and v.device = i.must_device and v.name = i.must_name and v.state = 'present')
       ), marked as (
         update volumes v set state = 'deleting', task_id = w.id, updated_at = now()
           from (select distinct on (storage_system_id, must_device, must_name) id, storage_system_id, must_device, must_name
                   from input where mark_deleting order by storage_system_id, must_device, must_name, position) w
          where v.storage_system_id = w.storage_system_id and v.device = w.must_device and v.name = w.must_name and v.state = 'present'
        returning w.id
       ), reserved as (
         insert into volumes (storage_system_id, device, name, size_bytes, state, task_id)
         select storage_system_id, reserve_device, reserve_name, reserve_size, 'creating', id
           from input where reserve_name is not null and id not in (select id from missing)
          order by storage_system_id, reserve_device, reserve_name, position
         on conflict (storage_system_id, device, name) do nothing
        returning task_id
       ), accepted as (
         select i.* from input i
          where i.id not in (select id from missing)
            and (not i.mark_deleting or i.id in (select id from marked))
            and (i.reserve_name is null or i.id in (select task_id from reserved))
       ), inserted as (
         insert into tasks (id, idempotency_key, request_hash, request_id, traceparent, kind, storage_system_id, device, params, server_id, state)
         select id, idempotency_key, request_hash, request_id, traceparent, kind, storage_system_id, device, params::jsonb, server_id, 'queued'
           from accepted
       ), history as (
         insert into task_history (task_id, state, attempt) select id, 'queued', 0 from accepted order by position
       ), quiet as (select set_config('duplex.notify_after_commit', 'on', true)), events as (
         insert into events (type, storage_system_id, task_id, payload)
         select 'task.state_changed', storage_system_id, id,
                jsonb_build_object('task_id', id, 'state', 'queued', 'attempt', 0, 'agent_id', null, 'server_id', server_id)
           from accepted cross join quiet order by position
       )
       select array(select idempotency_key from taken), array(select id from missing), array(select id from marked), array(select task_id from reserved),
              (extract(epoch from now()) * 1000)::float8;
    end
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function if exists duplex_accept_submissions');
}
