-- Replication sets: create, alter, drop and their errors.
\set VERBOSITY default
SELECT catalog_state() AS before \gset

SELECT concord.create_replication_set('default');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_replication_set('t1', capture := 'trigger');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_replication_set('t1', capture := 'magic');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_replication_set('');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_replication_set(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_replication_set('t1', replicate_insert := NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

SELECT concord.create_replication_set('inserts_only', true, false, false, false) > 0 AS created;
SELECT concord.create_replication_set('Mixed Case "set"') > 0 AS created;
SELECT set_name, replicate_insert, replicate_update, replicate_delete,
       replicate_truncate, capture FROM concord.replication_set ORDER BY set_name;

-- alter: NULL keeps a flag as it is
SELECT concord.alter_replication_set('inserts_only', replicate_truncate := true) > 0 AS altered;
SELECT concord.alter_replication_set('inserts_only') > 0 AS altered;
SELECT set_name, replicate_insert, replicate_update, replicate_delete,
       replicate_truncate, capture FROM concord.replication_set
 WHERE set_name = 'inserts_only';
SELECT catalog_state() AS before \gset
SELECT concord.alter_replication_set('nope', replicate_insert := false);
\echo :LAST_ERROR_SQLSTATE
SELECT concord.alter_replication_set('inserts_only', capture := 'trigger');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.alter_replication_set('inserts_only', capture := 'bogus');
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- turning on UPDATE/DELETE re-checks the member tables
CREATE TABLE keyless (a int, b text);
SELECT concord.replication_set_add_table('inserts_only', 'keyless');
SELECT catalog_state() AS before \gset
SELECT concord.alter_replication_set('inserts_only', replicate_update := true);
\echo :LAST_ERROR_SQLSTATE
SELECT concord.alter_replication_set('inserts_only', replicate_delete := true);
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;
ALTER TABLE keyless REPLICA IDENTITY FULL;
SELECT concord.alter_replication_set('inserts_only', replicate_update := true) > 0 AS altered;

-- drop
SELECT concord.drop_replication_set('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.drop_replication_set('nope', ifexists := true);
SELECT concord.drop_replication_set('inserts_only');
SELECT concord.drop_replication_set('Mixed Case "set"');
SELECT set_name FROM concord.replication_set ORDER BY set_name;
SELECT count(*) AS memberships_left FROM concord.replication_set_table;
DROP TABLE keyless;
