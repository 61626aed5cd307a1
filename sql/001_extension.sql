-- The extension installs with concord preloaded; its GUCs are validated.
CREATE EXTENSION concord;
SELECT extversion, extrelocatable, extnamespace::regnamespace
  FROM pg_extension WHERE extname = 'concord';
CREATE EXTENSION concord;
\echo :LAST_ERROR_SQLSTATE

-- the launcher is running
SELECT count(*) AS launchers FROM pg_stat_activity
 WHERE backend_type = 'concord launcher';

-- GUCs: default, validation, reserved prefix
SHOW concord.conflict_resolver;
SET concord.conflict_resolver = 'keep_local';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET concord.conflict_resolver = 'no_such_resolver';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET concord.conflict_resolver = 'custom';
SET concord.no_such_setting = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT name, setting, context FROM pg_settings
 WHERE name LIKE 'concord.%' ORDER BY name;

-- A helper for later files: a fingerprint of every concord catalog, to
-- show that refused calls leave them as they were.
CREATE FUNCTION catalog_state() RETURNS text LANGUAGE sql AS $$
  SELECT md5(
    coalesce((SELECT string_agg(format('%s/%s/%s/%s/%s', node_id, node_name, dsn, priority, is_local), ',' ORDER BY node_id) FROM concord.node), '') || '|' ||
    coalesce((SELECT string_agg(s::text, ',' ORDER BY set_id) FROM concord.replication_set s), '') || '|' ||
    coalesce((SELECT string_agg(t::text, ',' ORDER BY set_id, set_reloid) FROM concord.replication_set_table t), '') || '|' ||
    coalesce((SELECT string_agg(x.sub_id::text, ',' ORDER BY sub_id) FROM concord.subscription x), ''))
$$;
