-- Conflicts detected by apply, decided by the resolvers, kept in the history.
\set VERBOSITY default
SELECT format('host=%s port=%s dbname=concord_peer2',
              split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port')) AS peer_dsn \gset
CREATE DATABASE concord_peer2;
\c concord_peer2
CREATE EXTENSION concord;
SELECT concord.create_node('peer2', 'dbname=concord_peer2', 9) > 0 AS created;
CREATE TABLE item (id int PRIMARY KEY, v text);
SELECT concord.replication_set_add_table('default', 'item');
\c contrib_regression
CREATE TABLE item (id int PRIMARY KEY, v text);

-- set_conflict_resolver: validation
SELECT concord.set_conflict_resolver('item', 'nope');
SELECT concord.set_conflict_resolver('item', 'last_update_wins', conflict_type := 'nope');
SELECT concord.set_conflict_resolver('item', 'custom');
SELECT concord.set_conflict_resolver('item', 'keep_local', 'pg_catalog.now()'::regprocedure);
CREATE VIEW item_view AS SELECT * FROM item;
SELECT concord.set_conflict_resolver('item_view', 'keep_local');
DROP VIEW item_view;
SELECT count(*) AS settings FROM concord.conflict_resolver;

SELECT concord.create_subscription('c', :'peer_dsn', synchronize_data := false) > 0 AS created;
\c concord_peer2
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');

-- insert_exists, last_update_wins (the default): the later insert wins
INSERT INTO item VALUES (1, 'local, earlier');
\c concord_peer2
INSERT INTO item VALUES (1, 'peer, later');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT * FROM item ORDER BY id;

-- insert_exists, first_update_wins for this table and type: the earlier stays
SELECT concord.set_conflict_resolver('item', 'first_update_wins', conflict_type := 'insert_exists');
INSERT INTO item VALUES (2, 'local, earlier');
\c concord_peer2
INSERT INTO item VALUES (2, 'peer, later');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT * FROM item ORDER BY id;

-- replica_priority for every type of this table: peer2 (9) beats prov (7)
SELECT concord.set_conflict_resolver('item', NULL, conflict_type := 'insert_exists');
SELECT concord.set_conflict_resolver('item', 'replica_priority');
SELECT concord.alter_subscription_disable('c');
DO $$
BEGIN   -- wait (at most 30 s) until the apply worker has stopped
  FOR i IN 1..300 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'concord apply');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT count(*) AS apply_workers FROM pg_stat_activity WHERE backend_type = 'concord apply';
\c concord_peer2
INSERT INTO item VALUES (3, 'peer, earlier');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
INSERT INTO item VALUES (3, 'local, later');
SELECT concord.alter_subscription_enable('c');
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT * FROM item ORDER BY id;

-- update_missing and delete_missing: the row stays absent ...
SELECT concord.set_conflict_resolver('item', NULL);
\c concord_peer2
INSERT INTO item VALUES (4, 'only on peer');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM item WHERE id = 4;
COMMIT;
\c concord_peer2
UPDATE item SET v = 'updated on peer' WHERE id = 4;
DELETE FROM item WHERE id = 4;
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT count(*) AS rows_4 FROM item WHERE id = 4;

-- ... unless apply_remote: the update's new row is inserted
SELECT concord.set_conflict_resolver('item', 'apply_remote', conflict_type := 'update_missing');
\c concord_peer2
INSERT INTO item VALUES (5, 'five');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM item WHERE id = 5;
COMMIT;
\c concord_peer2
UPDATE item SET v = 'five, updated' WHERE id = 5;
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT * FROM item WHERE id = 5;

-- a partition follows the resolver set on its partitioned table
\c concord_peer2
CREATE TABLE pitem (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE pitem_low PARTITION OF pitem FOR VALUES FROM (0) TO (100);
SELECT concord.replication_set_add_table('default', 'pitem');
\c contrib_regression
CREATE TABLE pitem (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE pitem_low PARTITION OF pitem FOR VALUES FROM (0) TO (100);
SELECT concord.set_conflict_resolver('pitem', 'keep_local');
INSERT INTO pitem VALUES (1, 'local, earlier');
\c concord_peer2
INSERT INTO pitem VALUES (1, 'peer, later');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT * FROM pitem;

-- the history: one row per conflict, with both versions and the outcome
SELECT relation, conflict_type, resolver, resolution, key, local_row, local_origin,
       remote_row, remote_origin, resolved_row, subscription_name,
       local_commit_ts < remote_commit_ts AS local_earlier
  FROM concord.conflict_history ORDER BY conflict_id;
SELECT relation, conflict_type, resolution, conflicts FROM concord.conflict_stats
 ORDER BY 1, 2, 3;
-- each conflict is stamped with the time it was met
SELECT count(DISTINCT detected_at) = count(*) AS distinct_times FROM concord.conflict_history;

-- causality: with both directions subscribed, an update of a row the
-- writer had already received is no conflict; a concurrent one is
SELECT format('host=%s port=%s dbname=contrib_regression',
              split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port')) AS prov_dsn \gset
SELECT concord.replication_set_add_table('default', 'item');
\c concord_peer2
SELECT concord.create_subscription('back', :'prov_dsn', synchronize_data := false) > 0 AS created;
\c contrib_regression
SELECT count(*) AS before FROM concord.conflict_history \gset
INSERT INTO item VALUES (9, 'written here');
SELECT pg_current_wal_lsn() AS lsn \gset
\c concord_peer2
SELECT concord.wait_for_apply('back', :'lsn', '60s');
UPDATE item SET v = 'then updated on peer' WHERE id = 9;
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT * FROM item WHERE id = 9;
SELECT count(*) - :before AS new_conflicts FROM concord.conflict_history;
-- concurrent: both update row 9 while apart, here first
SELECT concord.alter_subscription_disable('c');
\c concord_peer2
SELECT concord.alter_subscription_disable('back');
\c contrib_regression
DO $$
BEGIN   -- wait (at most 30 s) until both apply workers have stopped
  FOR i IN 1..300 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'concord apply');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
UPDATE item SET v = 'updated here, earlier' WHERE id = 9;
SELECT pg_current_wal_lsn() AS lsn_here \gset
\c concord_peer2
UPDATE item SET v = 'updated on peer, later' WHERE id = 9;
SELECT pg_current_wal_lsn() AS lsn_peer \gset
SELECT concord.alter_subscription_enable('back');
SELECT concord.wait_for_apply('back', :'lsn_here', '60s');
SELECT * FROM item WHERE id = 9;
\c contrib_regression
SELECT concord.alter_subscription_enable('c');
SELECT concord.wait_for_apply('c', :'lsn_peer', '60s');
SELECT * FROM item WHERE id = 9;
SELECT conflict_type, resolver, resolution, local_origin, remote_origin
  FROM concord.conflict_history WHERE key = '{"id": 9}';
\c concord_peer2
SELECT conflict_type, resolver, resolution, local_origin, remote_origin
  FROM concord.conflict_history WHERE key = '{"id": 9}';
\c contrib_regression

-- DELETE here racing an UPDATE there, frozen before they meet: the
-- tombstone makes it update_deleted here, and the later write wins on both
SELECT concord.alter_subscription_disable('c');
\c concord_peer2
SELECT concord.alter_subscription_disable('back');
\c contrib_regression
DO $$
BEGIN   -- wait (at most 30 s) until both apply workers have stopped
  FOR i IN 1..300 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'concord apply');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
DELETE FROM item WHERE id = 9;
SELECT pg_current_wal_lsn() AS lsn_here \gset
VACUUM FREEZE item;
\c concord_peer2
UPDATE item SET v = 'updated on peer after the delete' WHERE id = 9;
SELECT pg_current_wal_lsn() AS lsn_peer \gset
VACUUM FREEZE item;
SELECT concord.alter_subscription_enable('back');
SELECT concord.wait_for_apply('back', :'lsn_here', '60s');
SELECT * FROM item WHERE id = 9;
\c contrib_regression
SELECT concord.alter_subscription_enable('c');
SELECT concord.wait_for_apply('c', :'lsn_peer', '60s');
SELECT * FROM item WHERE id = 9;
SELECT conflict_type, resolver, resolution FROM concord.conflict_history
 WHERE key = '{"id": 9}' ORDER BY conflict_id;
\c concord_peer2
SELECT conflict_type, resolver, resolution FROM concord.conflict_history
 WHERE key = '{"id": 9}' ORDER BY conflict_id;
SELECT concord.drop_subscription('back');
\c contrib_regression
-- the tombstones: the deletes here, and the remote deletes applied or found
-- missing (delete_missing records the remote delete too)
SELECT key FROM concord.tombstone WHERE relid = 'item'::regclass ORDER BY key;
SELECT count(*) AS of_dropped_tables FROM concord.tombstone WHERE relid <> 'item'::regclass;

-- the error resolver stops the subscription until the row is fixed
SELECT concord.set_conflict_resolver(NULL, 'error');
INSERT INTO item VALUES (6, 'local');
\c concord_peer2
INSERT INTO item VALUES (6, 'peer');
SELECT pg_current_wal_lsn() AS lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('c', :'lsn', '3s');
SELECT status, split_part(last_error, ' (subscription', 1) AS last_error,
       last_error LIKE '%(subscription "c", remote transaction % from node "peer2" committed at %)' AS names_txn
  FROM concord.subscription_status;
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM item WHERE id = 6;
COMMIT;
SELECT concord.wait_for_apply('c', :'lsn', '60s');
SELECT * FROM item WHERE id = 6;
SELECT concord.set_conflict_resolver(NULL, NULL);

-- a dropped table leaves no resolver setting behind
SELECT concord.set_conflict_resolver('item', 'keep_local');
SELECT concord.drop_subscription('c');
DROP TABLE item, pitem;
SELECT count(*) AS settings FROM concord.conflict_resolver;

-- a user without privileges on concord deletes from a replicated table:
-- the tombstone is written all the same, its key independent of settings
CREATE TABLE ts_keyed (t timestamptz PRIMARY KEY, v text);
SELECT concord.replication_set_add_table('default', 'ts_keyed');
INSERT INTO ts_keyed VALUES ('2020-01-01 00:00:00+00', 'x');
CREATE ROLE concord_deleter;
GRANT SELECT, DELETE ON ts_keyed TO concord_deleter;
SET ROLE concord_deleter;
SET TimeZone = 'Asia/Tokyo';
SET DateStyle = 'SQL, DMY';
DELETE FROM ts_keyed;
RESET ROLE;
RESET TimeZone;
RESET DateStyle;
SELECT key FROM concord.tombstone WHERE relid = 'ts_keyed'::regclass;
-- tombstone_gc(): a tombstone younger than concord.tombstone_gc_delay stays
SELECT concord.tombstone_gc() AS removed;
SELECT count(*) > 0 AS kept FROM concord.tombstone WHERE relid = 'ts_keyed'::regclass;

-- what the writer had applied travels with its changes, and a transaction
-- that changes no replicated table sends nothing at all
CREATE TABLE not_replicated (id int PRIMARY KEY);
SELECT 'init' FROM pg_create_logical_replication_slot('regress_seen', 'concord');
INSERT INTO not_replicated VALUES (1);
INSERT INTO ts_keyed VALUES ('2021-01-01 00:00:00+00', 'y');
SELECT concord.protocol_describe(data)
  FROM pg_logical_slot_peek_binary_changes('regress_seen', NULL, NULL,
         'proto_version', '1', 'replication_sets', 'default');
-- version 2: the same messages in one CopyData, SEEN with its length
SELECT concord.protocol_describe(data, 2)
  FROM pg_logical_slot_peek_binary_changes('regress_seen', NULL, NULL,
         'proto_version', '2', 'replication_sets', 'default');
SELECT pg_drop_replication_slot('regress_seen');
-- EXPLAIN of a writing statement writes nothing: no vector is logged, so no
-- transaction id is taken (one was, before)
BEGIN;
EXPLAIN (COSTS OFF) INSERT INTO not_replicated VALUES (2);
SELECT pg_current_xact_id_if_assigned() IS NULL AS nothing_written;
ROLLBACK;
-- a message whose string runs to the end of the bytea is refused cleanly
SELECT concord.protocol_describe('\x520000000000414141'::bytea);
DROP TABLE ts_keyed, not_replicated;
DROP ROLE concord_deleter;
DROP DATABASE concord_peer2 WITH (FORCE);
