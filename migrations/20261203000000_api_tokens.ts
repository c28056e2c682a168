import type { Knex } from 'knex';

// Users' API tokens. Only a SHA-256 hash of each secret is kept: a leaked table holds no usable
// token. Tokens are revoked, never deleted, so the list shows what existed and when it ended.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_tokens', (t) => {
    t.text('id').primary();
    t.text('name').notNullable();
    t.text('role').notNullable();
    t.text('secret_sha256').notNullable().unique();
    t.text('created_by');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('expires_at', { useTz: true });
    t.timestamp('revoked_at', { useTz: true });
  });
  await knex.raw(`alter table api_tokens add constraint api_tokens_role_check check (role in ('viewer', 'operator', 'admin'))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('api_tokens');
}
