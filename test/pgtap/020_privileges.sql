-- pgTAP: PUBLIC can neither read the catalogs holding DSNs nor call any
-- concord function; configuration is for superusers and their grantees.
BEGIN;
SELECT plan(16);

-- Table privileges, as seen for PUBLIC.
SELECT ok(NOT has_table_privilege('public', format('concord.%I', t), 'SELECT'),
          format('PUBLIC cannot read concord.%s', t))
  FROM unnest(ARRAY['node', 'subscription']) AS t;

SELECT is_empty($$
    SELECT c.oid::regclass::text || ': ' || a.privilege_type
      FROM pg_class c, aclexplode(c.relacl) a
     WHERE c.relnamespace = 'concord'::regnamespace
       AND a.grantee = 0
       AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
$$, 'PUBLIC may not write any table in schema concord');

-- Function privileges: proacl NULL means the default, EXECUTE for PUBLIC.
SELECT isnt_empty($$
    SELECT 1 FROM pg_proc WHERE pronamespace = 'concord'::regnamespace
$$, 'schema concord has functions');

SELECT is_empty($$
    SELECT p.oid::regprocedure::text
      FROM pg_proc p
     WHERE p.pronamespace = 'concord'::regnamespace
       AND (p.proacl IS NULL
            OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                        WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))
$$, 'no function in schema concord is executable by PUBLIC (proacl)');

SELECT is_empty($$
    SELECT p.oid::regprocedure::text
      FROM pg_proc p
     WHERE p.pronamespace = 'concord'::regnamespace
       AND has_function_privilege('public', p.oid, 'EXECUTE')
$$, 'has_function_privilege: PUBLIC can execute no concord function');

-- No concord function runs with its owner's rights.
SELECT is_empty($$
    SELECT p.oid::regprocedure::text
      FROM pg_proc p
     WHERE p.pronamespace = 'concord'::regnamespace AND p.prosecdef
$$, 'no concord function is SECURITY DEFINER');

-- An ordinary role, even with USAGE on the schema, is refused.
CREATE ROLE concord_tap_nobody NOLOGIN;
GRANT USAGE ON SCHEMA concord TO concord_tap_nobody;
SELECT ok(NOT has_table_privilege('concord_tap_nobody', 'concord.node', 'SELECT'),
          'an ordinary role has no SELECT on concord.node');
SELECT ok(NOT has_function_privilege('concord_tap_nobody',
              'concord.create_node(name, text, integer)', 'EXECUTE'),
          'an ordinary role cannot execute concord.create_node');

SET LOCAL ROLE concord_tap_nobody;
SELECT throws_ok('SELECT * FROM concord.node', '42501',
                 'permission denied for table node',
                 'an ordinary role gets permission denied reading concord.node');
SELECT throws_ok('SELECT * FROM concord.subscription', '42501',
                 'permission denied for table subscription',
                 'an ordinary role gets permission denied reading concord.subscription');
SELECT throws_ok('SELECT dsn FROM concord.node', '42501', NULL,
                 'an ordinary role cannot read node DSNs');
SELECT throws_ok($$SELECT concord.create_node('evil', 'host=127.0.0.1')$$, '42501',
                 'permission denied for function create_node',
                 'an ordinary role cannot call concord.create_node');
SELECT throws_ok($$SELECT concord.create_replication_set('evil')$$, '42501',
                 'permission denied for function create_replication_set',
                 'an ordinary role cannot call concord.create_replication_set');
SELECT throws_ok($$INSERT INTO concord.replication_set (set_id, set_name) VALUES (1, 'evil')$$,
                 '42501', 'permission denied for table replication_set',
                 'an ordinary role cannot write concord.replication_set');
RESET ROLE;

SELECT is(current_user::text, session_user::text, 'back to the test user');

SELECT * FROM finish();
ROLLBACK;
