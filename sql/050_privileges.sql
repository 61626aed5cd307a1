-- DSNs are not for PUBLIC, nor is the configuration API.
\set VERBOSITY default
CREATE ROLE concord_nobody LOGIN;
SET ROLE concord_nobody;
-- by default the schema itself is closed
SELECT * FROM concord.replication_set;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- even with USAGE on the schema, each object stays closed
GRANT USAGE ON SCHEMA concord TO concord_nobody;
SET ROLE concord_nobody;
SELECT * FROM concord.node;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM concord.subscription;
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_replication_set('sneaky');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.alter_node('n1', dsn := 'host=evil');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- a role granted EXECUTE can configure without reading the catalogs
GRANT EXECUTE ON FUNCTION concord.create_replication_set(name, boolean, boolean, boolean, boolean, text) TO concord_nobody;
SET ROLE concord_nobody;
SELECT concord.create_replication_set('granted') > 0 AS created;
SELECT * FROM concord.node;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT set_name FROM concord.replication_set ORDER BY set_name;
SELECT concord.drop_replication_set('granted');
REVOKE ALL ON SCHEMA concord FROM concord_nobody;
REVOKE ALL ON FUNCTION concord.create_replication_set(name, boolean, boolean, boolean, boolean, text) FROM concord_nobody;

-- a role granted the set functions may add and remove only the tables it
-- owns, as for ALTER PUBLICATION (it could add any table before)
CREATE SCHEMA adm;
CREATE TABLE adm.not_theirs (id int PRIMARY KEY);
CREATE TABLE adm.theirs (id int PRIMARY KEY);
ALTER TABLE adm.theirs OWNER TO concord_nobody;
SELECT concord.create_replication_set('adm', replicate_update := false,
                                      replicate_delete := false) > 0 AS created;
GRANT USAGE ON SCHEMA concord, adm TO concord_nobody;
GRANT EXECUTE ON FUNCTION
    concord.replication_set_add_table(name, regclass, boolean, text[], text),
    concord.replication_set_add_all_tables(name, text[], boolean),
    concord.replication_set_remove_table(name, regclass)
  TO concord_nobody;
SET ROLE concord_nobody;
SELECT concord.replication_set_add_table('adm', 'adm.not_theirs');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_all_tables('adm', '{adm}');
SELECT concord.replication_set_add_table('adm', 'adm.theirs');
RESET ROLE;
SELECT concord.replication_set_add_table('adm', 'adm.not_theirs');
SET ROLE concord_nobody;
SELECT concord.replication_set_remove_table('adm', 'adm.not_theirs');
SELECT concord.replication_set_remove_table('adm', 'adm.theirs');
RESET ROLE;
SELECT t.set_reloid FROM concord.replication_set_table t
  JOIN concord.replication_set s USING (set_id) WHERE s.set_name = 'adm';
SELECT concord.drop_replication_set('adm');
DROP SCHEMA adm CASCADE;
REVOKE ALL ON SCHEMA concord FROM concord_nobody;
REVOKE ALL ON FUNCTION
    concord.replication_set_add_table(name, regclass, boolean, text[], text),
    concord.replication_set_add_all_tables(name, text[], boolean),
    concord.replication_set_remove_table(name, regclass)
  FROM concord_nobody;
-- no function of the extension is executable by PUBLIC
SELECT p.oid::regprocedure AS public_executable
  FROM pg_proc p
 WHERE p.pronamespace = 'concord'::regnamespace
   AND has_function_privilege('concord_nobody', p.oid, 'EXECUTE');
DROP ROLE concord_nobody;

-- the extension drops cleanly and comes back
DROP EXTENSION concord;
SELECT count(*) FROM pg_namespace WHERE nspname = 'concord';
CREATE EXTENSION concord;
SELECT count(*) AS nodes FROM concord.node;
