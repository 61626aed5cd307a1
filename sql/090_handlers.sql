-- The custom resolver: user-defined conflict handlers.
\set VERBOSITY default
SELECT format('host=%s port=%s dbname=concord_peer3',
              split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port')) AS peer_dsn \gset
CREATE ROLE concord_app;
CREATE ROLE concord_other;
-- what a DBA grants to the roles that write handlers
GRANT USAGE ON SCHEMA concord TO concord_app, concord_other;
GRANT CREATE ON SCHEMA public TO concord_app;
GRANT EXECUTE ON FUNCTION concord.set_conflict_resolver(regclass, text, regprocedure, text)
  TO concord_app, concord_other;
CREATE DATABASE concord_peer3;
\c concord_peer3
CREATE EXTENSION concord;
SELECT concord.create_node('peer3', 'dbname=concord_peer3', 1) > 0 AS created;
CREATE TABLE doc (id int PRIMARY KEY, v text NOT NULL, n int);
SELECT concord.replication_set_add_table('default', 'doc');
\c contrib_regression
CREATE TABLE doc (id int PRIMARY KEY, v text NOT NULL, n int);
ALTER TABLE doc OWNER TO concord_app;
CREATE TABLE other_t (id int PRIMARY KEY);

-- handlers, owned by the table's owner; they run with search_path
-- 'pg_catalog, pg_temp', so they qualify the names they use
SET ROLE concord_app;
CREATE FUNCTION merge(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE sql AS $$
  SELECT ROW(r.id, l.v || '+' || r.v || ' (' || i.conflict_type || ' ' ||
             i.local_origin || '/' || i.remote_origin || ')', l.n + r.n)::public.doc
$$;
CREATE FUNCTION keep(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE sql AS $$ SELECT NULL::public.doc $$;
CREATE FUNCTION boom(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom on key %', r.id; END $$;
CREATE FUNCTION spin(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE plpgsql AS $$ BEGIN LOOP END LOOP; END $$;
CREATE FUNCTION rekey(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE sql AS $$ SELECT ROW(r.id + 1000, r.v, r.n)::public.doc $$;
CREATE FUNCTION nullv(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE sql AS $$ SELECT ROW(r.id, NULL, r.n)::public.doc $$;
CREATE FUNCTION whoami(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE sql AS $$
  SELECT ROW(r.id, current_user || ' | ' || current_setting('search_path'), 0)::public.doc
$$;
CREATE FUNCTION escalate(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE plpgsql AS $$
BEGIN
  ALTER ROLE concord_app SUPERUSER;
  RETURN r;
END $$;
CREATE FUNCTION peek(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE plpgsql AS $$
BEGIN
  RETURN ROW(r.id, (SELECT string_agg(dsn, ',') FROM concord.node), 0)::public.doc;
END $$;
CREATE FUNCTION badrow(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE plpgsql AS $$
DECLARE
  o public.other_t;
BEGIN
  o := ROW(r.id);
  RETURN o;
END $$;
CREATE FUNCTION two_args(l doc, r doc) RETURNS doc
LANGUAGE sql AS $$ SELECT r $$;
CREATE FUNCTION wrong_ret(l doc, r doc, i concord.conflict_info) RETURNS other_t
LANGUAGE sql AS $$ SELECT NULL::public.other_t $$;
CREATE FUNCTION wrong_arg(l other_t, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE sql AS $$ SELECT r $$;
CREATE FUNCTION many(l doc, r doc, i concord.conflict_info) RETURNS SETOF doc
LANGUAGE sql AS $$ SELECT r $$;
CREATE FUNCTION private_h(l doc, r doc, i concord.conflict_info) RETURNS doc
LANGUAGE sql AS $$ SELECT r $$;
REVOKE EXECUTE ON FUNCTION private_h(doc, doc, concord.conflict_info) FROM PUBLIC, concord_app;
RESET ROLE;

-- set_conflict_resolver: a handler must fit the table, only its owner sets it
SELECT concord.set_conflict_resolver('doc', 'custom');
SELECT concord.set_conflict_resolver(NULL, 'custom', 'merge(doc, doc, concord.conflict_info)');
SELECT concord.set_conflict_resolver('doc', 'custom', 'two_args(doc, doc)');
SELECT concord.set_conflict_resolver('doc', 'custom', 'wrong_ret(doc, doc, concord.conflict_info)');
SELECT concord.set_conflict_resolver('doc', 'custom', 'wrong_arg(other_t, doc, concord.conflict_info)');
SELECT concord.set_conflict_resolver('doc', 'custom', 'many(doc, doc, concord.conflict_info)');
SELECT concord.set_conflict_resolver('doc', 'custom', 'private_h(doc, doc, concord.conflict_info)');
SELECT concord.set_conflict_resolver('other_t', 'custom', 'merge(doc, doc, concord.conflict_info)');
SET ROLE concord_other;
SELECT concord.set_conflict_resolver('doc', 'custom', 'merge(doc, doc, concord.conflict_info)');
RESET ROLE;
SELECT count(*) AS settings FROM concord.conflict_resolver WHERE set_reloid = 'doc'::regclass;
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'merge(doc, doc, concord.conflict_info)');
RESET ROLE;
SELECT set_reloid::regclass, conflict_type, resolver, handler
  FROM concord.conflict_resolver WHERE set_reloid = 'doc'::regclass;

SELECT concord.create_subscription('h', :'peer_dsn', synchronize_data := false) > 0 AS created;
\c concord_peer3
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');

-- Each case: a row written here, then the same key inserted on the peer,
-- which never saw ours (insert_exists, for the handler), and an ordinary
-- row after it that must arrive too: the subscription keeps replicating.

-- the handler merges both rows (handler_row)
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'merge(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (1, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (1, 'remote', 10);
INSERT INTO doc VALUES (101, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (1, 101) ORDER BY id;

-- NULL keeps the local row (keep_local)
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'keep(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (2, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (2, 'remote', 10);
INSERT INTO doc VALUES (102, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (2, 102) ORDER BY id;

-- a handler that raises: skipped, with its message
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'boom(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (3, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (3, 'remote', 10);
INSERT INTO doc VALUES (103, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (3, 103) ORDER BY id;

-- a handler that loops: cancelled by concord.handler_timeout, skipped
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'spin(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (4, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (4, 'remote', 10);
INSERT INTO doc VALUES (104, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (4, 104) ORDER BY id;

-- a row with another key: skipped
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'rekey(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (5, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (5, 'remote', 10);
INSERT INTO doc VALUES (105, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (5, 105) ORDER BY id;

-- a row that breaks a constraint: skipped
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'nullv(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (6, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (6, 'remote', 10);
INSERT INTO doc VALUES (106, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (6, 106) ORDER BY id;

-- the handler runs as the table owner with a safe search_path
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'whoami(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (7, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (7, 'remote', 10);
INSERT INTO doc VALUES (107, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (7, 107) ORDER BY id;

-- a handler trying to make its owner a superuser: refused, skipped
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'escalate(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (8, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (8, 'remote', 10);
INSERT INTO doc VALUES (108, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (8, 108) ORDER BY id;

-- a handler reading concord's catalogs (DSNs): refused, skipped
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'peek(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (9, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (9, 'remote', 10);
INSERT INTO doc VALUES (109, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (9, 109) ORDER BY id;

-- a row of another type: skipped
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'badrow(doc, doc, concord.conflict_info)');
RESET ROLE;
INSERT INTO doc VALUES (11, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (11, 'remote', 10);
INSERT INTO doc VALUES (111, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (11, 111) ORDER BY id;

-- a dropped handler: skipped, the subscription goes on
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'custom', 'boom(doc, doc, concord.conflict_info)');
DROP FUNCTION boom(doc, doc, concord.conflict_info);
RESET ROLE;
INSERT INTO doc VALUES (10, 'local', 1);
\c concord_peer3
INSERT INTO doc VALUES (10, 'remote', 10);
INSERT INTO doc VALUES (110, 'after', 0);
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id IN (10, 110) ORDER BY id;

-- per conflict type: update_origin_differs goes to the handler, insert_exists
-- to last_update_wins; the update here is earlier, the peer's later
SET ROLE concord_app;
SELECT concord.set_conflict_resolver('doc', 'last_update_wins');
SELECT concord.set_conflict_resolver('doc', 'custom', 'merge(doc, doc, concord.conflict_info)',
                                     'update_origin_differs');
RESET ROLE;
UPDATE doc SET v = 'local upd', n = 2 WHERE id = 101;
\c concord_peer3
UPDATE doc SET v = 'remote upd', n = 20 WHERE id = 101;
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM doc WHERE id = 101;

-- the history: resolver custom, the resolution, the error of a failed handler
SELECT key, conflict_type, resolver, resolution, resolved_row, error_message
  FROM concord.conflict_history WHERE relation = 'public.doc' ORDER BY conflict_id;
SELECT rolsuper AS app_is_superuser FROM pg_roles WHERE rolname = 'concord_app';
SELECT status FROM concord.subscription_status WHERE subscription_name = 'h';


-- conflict_reapply: the skipped change of key 3 (the handler raised) and
-- the refused one of key 2 (keep_local) are applied now, as local writes
CREATE FUNCTION try_reapply(k int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RETURN concord.conflict_reapply((SELECT max(conflict_id) FROM concord.conflict_history
                                    WHERE relation = 'public.doc' AND key = jsonb_build_object('id', k)));
EXCEPTION WHEN OTHERS THEN
  RETURN 'refused: ' || regexp_replace(SQLERRM, 'conflict \d+', 'conflict N') || ' (' || SQLSTATE || ')';
END $$;
SELECT try_reapply(3) AS key3, try_reapply(2) AS key2;
SELECT * FROM doc WHERE id IN (2, 3) ORDER BY id;
SELECT key, resolution, reapplied_at IS NOT NULL AS reapplied
  FROM concord.conflict_history WHERE relation = 'public.doc' AND key IN ('{"id": 2}', '{"id": 3}');
-- refused: twice, an applied change, a conflict that does not exist
SELECT try_reapply(3) AS again, try_reapply(1) AS applied;
SELECT concord.conflict_reapply(-1);
-- a delete that was refused is re-applied as a delete
INSERT INTO concord.conflict_history (subscription_name, relation, conflict_type, resolver,
    resolution, key, remote_row, remote_origin, remote_commit_ts, remote_lsn)
  VALUES ('h', 'public.doc', 'delete_origin_differs', 'keep_local', 'keep_local',
          '{"id": 7}', '{"id": 7}', 'peer3', now(), '0/0');
SELECT try_reapply(7) AS key7;
SELECT count(*) AS rows_7 FROM doc WHERE id = 7;
DROP FUNCTION try_reapply;

-- a table partitioned here but plain on the provider: apply refuses it (it
-- never routes rows into partitions) and the subscription is down until
-- the table is fixed; then the change arrives
CREATE TABLE ptarget (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE ptarget_all PARTITION OF ptarget FOR VALUES FROM (0) TO (1000);
\c concord_peer3
CREATE TABLE ptarget (id int PRIMARY KEY, v text);
SELECT concord.replication_set_add_table('default', 'ptarget');
INSERT INTO ptarget VALUES (1, 'one');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
DO $$
BEGIN   -- wait (at most 60 s) until the subscription is down
  FOR i IN 1..600 LOOP
    EXIT WHEN (SELECT status = 'down' FROM concord.subscription_status WHERE subscription_name = 'h');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT status, split_part(last_error, ' (subscription', 1) AS last_error
  FROM concord.subscription_status WHERE subscription_name = 'h';
DROP TABLE ptarget;
CREATE TABLE ptarget (id int PRIMARY KEY, v text);
SELECT concord.wait_for_apply('h', :'lsn', '60s');
SELECT * FROM ptarget;
DROP TABLE ptarget;

SELECT concord.drop_subscription('h');
DROP DATABASE concord_peer3 WITH (FORCE);
SET client_min_messages = warning;
DROP TABLE doc, other_t CASCADE;  -- and the handlers taking their rows
RESET client_min_messages;
REVOKE EXECUTE ON FUNCTION concord.set_conflict_resolver(regclass, text, regprocedure, text)
  FROM concord_app, concord_other;
REVOKE USAGE ON SCHEMA concord FROM concord_app, concord_other;
REVOKE CREATE ON SCHEMA public FROM concord_app;
DELETE FROM concord.conflict_resolver WHERE handler IS NOT NULL;
DROP ROLE concord_app, concord_other;
