//! The seed: raw multi-row SQL that fills every table the checks plan
//! against, then ANALYZE.

/// `acme` holds 12 000 live secrets (`key-000001` …); 40 other tenants share
/// 8 000 more, and 1 000 purged tombstones lie among acme's rows. Filters are
/// seeded both common and rare, so a missing index shows up as a scan.
pub(crate) const SEED: &[&str] = &[
    // A plain table, not a TEMP one: the pool may run each statement on
    // another connection.
    "CREATE TABLE seed_secrets AS
     SELECT i,
            CASE WHEN i <= 12000 THEN 'acme'
                 ELSE 't' || lpad(((i - 12001) % 40)::text, 3, '0') END AS tenant,
            md5('secret' || i)::uuid::text AS uid,
            'key-' || lpad(i::text, 6, '0') AS key
     FROM generate_series(1, 20000) AS i",
    // Every 10th secret is an AWS external reference, in one of 7 vaults,
    // except one in 200 (none of them deleted), which sits in the vault
    // `rare`; every 50th is deleted, every 25th otherwise disabled.
    "INSERT INTO secrets (uid, tenant, key, display_name, description, mode, provider, vault,
                          external_ref, state, current_version, latest_version, create_time,
                          update_time, rotate_time, last_resolve_time, delete_time, purge_time,
                          purged_time, revision)
     SELECT uid, tenant, key, 'Display ' || i, '',
            CASE WHEN i % 10 = 0 THEN 'external_reference' ELSE 'managed' END,
            CASE WHEN i % 10 = 0 THEN 'aws_secrets_manager' ELSE 'local_encrypted' END,
            CASE WHEN i % 200 = 10 THEN 'tenants/' || tenant || '/vaults/rare'
                 WHEN i % 10 = 0 THEN 'tenants/' || tenant || '/vaults/aws-' || (i % 7)
                 ELSE '' END,
            CASE WHEN i % 10 = 0 THEN 'arn:aws:secretsmanager:eu-west-1:1:secret:ext-' || i
                 ELSE '' END,
            CASE WHEN i % 50 = 0 THEN 'deleted' WHEN i % 25 = 0 THEN 'disabled'
                 ELSE 'active' END,
            3, 3, 1764000000000000 + i, 1764000000000000 + i, NULL, NULL,
            CASE WHEN i % 50 = 0 THEN 1764000000000000 + i END,
            CASE WHEN i % 50 = 0 THEN 1766000000000000 + i END,
            NULL, 1
     FROM seed_secrets",
    // Tombstones of purged secrets: same keys as live ones may come back, so
    // these reuse acme's key space.
    "INSERT INTO secrets (uid, tenant, key, display_name, description, mode, provider, vault,
                          external_ref, state, current_version, latest_version, create_time,
                          update_time, delete_time, purge_time, purged_time, revision)
     SELECT md5('tombstone' || i)::uuid::text, 'acme', 'key-' || lpad((i * 7)::text, 6, '0'),
            'Gone ' || i, '', 'managed', 'local_encrypted', '', '', 'deleted', 1, 1,
            1763000000000000, 1763000000000000, 1763000000000000, 1763500000000000,
            1763500000000000, 3
     FROM generate_series(1, 1000) AS i",
    // Two labels each: env (common values) and team (50 values, 2% each).
    "INSERT INTO secret_labels (secret_uid, key, value)
     SELECT uid, 'env', (ARRAY['prod', 'staging', 'dev'])[1 + i % 3] FROM seed_secrets
     UNION ALL
     SELECT uid, 'team', 'team-' || (i % 50) FROM seed_secrets",
    "INSERT INTO secret_versions (secret_uid, version, state, provider_version_ref, material,
                                  fingerprint, create_time, created_by, destroy_time, revision,
                                  provider, vault)
     SELECT uid, v, 'enabled', 'ref-' || v, '{\"scheme\":\"seed\"}', md5(uid || v),
            1764000000000000 + v, 'spiffe://seed/admin', NULL, 1, 'local_encrypted', ''
     FROM seed_secrets, generate_series(1, 3) AS v",
    // One secret rotated thousands of times, so its versions span many pages.
    "INSERT INTO secret_versions (secret_uid, version, state, provider_version_ref, material,
                                  fingerprint, create_time, created_by, destroy_time, revision,
                                  provider, vault)
     SELECT uid, v, 'enabled', 'ref-' || v, '{\"scheme\":\"seed\"}', md5(uid || v),
            1764000000000000 + v, 'spiffe://seed/admin', NULL, 1, 'local_encrypted', ''
     FROM seed_secrets, generate_series(4, 3000) AS v WHERE i = 5001",
    // Two bindings per secret; 3 000 agents, so each has a handful.
    "INSERT INTO bindings (id, tenant, secret_uid, consumer_kind, consumer_id, config_path,
                           version_selector, required, label, create_time, update_time, revision)
     SELECT md5('binding' || i || '-' || j)::uuid::text, tenant, uid, 'agent',
            'agent-' || ((i * 2 + j) % 3000), 'env.KEY_' || i || '_' || j, '', true, '',
            1764000000000000, 1764000000000000, 1
     FROM seed_secrets, generate_series(1, 2) AS j",
    // One secret shared by 3 000 runs, so its bindings span many pages.
    "INSERT INTO bindings (id, tenant, secret_uid, consumer_kind, consumer_id, config_path,
                           version_selector, required, label, create_time, update_time, revision)
     SELECT md5('shared' || r)::uuid::text, tenant, uid, 'run', 'run-' || r, 'env.SHARED', '',
            true, '', 1764000000000000, 1764000000000000, 1
     FROM seed_secrets, generate_series(1, 3000) AS r WHERE i = 5001",
    // acme's chain is 15 000 events long; every other tenant's 100.
    "INSERT INTO audit_events (tenant, seq, time, principal, action, resource, version,
                               consumer_kind, consumer_id, config_path, context, outcome,
                               reason, request_id, prev_hash, hash)
     SELECT tenant, seq, 1764000000000000 + seq, 'spiffe://seed/orchestrator',
            (ARRAY['secret.resolve', 'secret.resolve', 'secret.resolve', 'secret.create',
                   'secret.rotate', 'binding.create'])[1 + seq % 6],
            'tenants/' || tenant || '/secrets/key-' || lpad((seq % 12000)::text, 6, '0'),
            1, 'agent', 'agent-' || (seq % 3000), 'env.KEY', '{}',
            CASE WHEN seq % 20 = 0 THEN 'denied' ELSE 'success' END, '', '',
            md5('prev' || seq), md5('hash' || seq)
     FROM (SELECT 'acme' AS tenant, generate_series(1, 15000) AS seq
           UNION ALL
           SELECT 't' || lpad(t::text, 3, '0'), generate_series(1, 100)
           FROM generate_series(0, 39) AS t) AS e",
    "INSERT INTO audit_heads (tenant, last_seq, last_hash)
     SELECT tenant, max(seq), md5('hash' || max(seq)) FROM audit_events GROUP BY tenant
     UNION ALL
     SELECT 'quiet-' || t, 1, md5('quiet' || t) FROM generate_series(1, 5000) AS t",
    "INSERT INTO idempotency_keys (tenant, request_id, operation, request_hash, secret_uid,
                                   version, create_time)
     SELECT tenant, 'req-' || lpad(i::text, 6, '0'), 'secret.create', md5('body' || i), uid, 1,
            1764000000000000 + i
     FROM seed_secrets",
    // 60 vaults per tenant; one default per tenant and provider.
    "INSERT INTO vaults (uid, tenant, vault_id, provider, display_name, state, is_default,
                         config, health_status, health_message, health_check_time,
                         create_time, update_time, disable_time, revision)
     SELECT md5('vault' || t || '-' || v)::uuid::text, tenant, 'vault-' || lpad(v::text, 3, '0'),
            CASE WHEN v % 2 = 0 THEN 'aws_secrets_manager' ELSE 'local_encrypted' END,
            'Vault ' || v, 'ready', v < 2, '{}', '', '', NULL,
            1764000000000000, 1764000000000000, NULL, 1
     FROM (SELECT 'acme' AS tenant, 0 AS t
           UNION ALL
           SELECT 't' || lpad(t::text, 3, '0'), t + 1 FROM generate_series(0, 39) AS t) AS ts,
          generate_series(0, 59) AS v",
    "DROP TABLE seed_secrets",
    // The seeded tables only (a bare ANALYZE would do the catalogs too),
    // each read whole rather than sampled (300 × the target rows), so the
    // statistics, and with them the plans, are the same on every run.
    "SET default_statistics_target = 1000;
     ANALYZE secrets, secret_labels, secret_versions, bindings, audit_events, audit_heads,
             idempotency_keys, vaults",
];
