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
