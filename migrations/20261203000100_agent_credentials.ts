import type { Knex } from 'knex';

// Each agent's credential, as a SHA-256 hash with its expiry, and the one before it, which
// stays valid until it expires so that requests already sent when it was rotated still count.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.text('credential_sha256');
    t.timestamp('credential_expires_at', { useTz: true });
    t.text('previous_credential_sha256');
    t.timestamp('previous_credential_expires_at', { useTz: true });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.dropColumn('previous_credential_expires_at');
    t.dropColumn('previous_credential_sha256');
    t.dropColumn('credential_expires_at');
    t.dropColumn('credential_sha256');
  });
}
