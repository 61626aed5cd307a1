-- Subscriptions between two databases of one instance, and their errors.
\set VERBOSITY default
SELECT format('host=%s port=%s dbname=concord_peer',
              split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port')) AS peer_dsn \gset
CREATE DATABASE concord_peer;
\c concord_peer
CREATE EXTENSION concord;
SELECT concord.create_node('peer', 'dbname=concord_peer', 3) > 0 AS created;
CREATE TABLE fruit (id int PRIMARY KEY, name text);
SELECT concord.replication_set_add_table('default', 'fruit');
INSERT INTO fruit VALUES (1, 'apple'), (2, 'pear');
\c contrib_regression
CREATE TABLE fruit (id int PRIMARY KEY, name text);
SELECT catalog_state() AS before \gset

-- bad input
SELECT concord.create_subscription(NULL, :'peer_dsn');
SELECT concord.create_subscription('s', NULL);
SELECT concord.create_subscription('s', '');
SELECT concord.create_subscription('s', :'peer_dsn', '{}');
SELECT concord.create_subscription('s', :'peer_dsn', '{nope}');
SELECT concord.create_subscription('s', :'peer_dsn', forward_origins := '{all,peer}');
SELECT concord.create_subscription('s', :'peer_dsn', apply_delay := '-1s');
-- malformed or unreachable: the error never shows the password
SELECT concord.create_subscription('s', 'host=x password s3cret');
SELECT concord.create_subscription('s', 'host=/nonexistent port=1 dbname=x password=s3cret');
SELECT concord.create_subscription('s', 'dbname=contrib_regression host=' ||
        split_part(current_setting('unix_socket_directories'), ',', 1) || ' port=' || current_setting('port'));
SELECT catalog_state() = :'before' AS unchanged;

-- a working subscription: initial copy, then streaming
SELECT concord.create_subscription('from_peer', :'peer_dsn') > 0 AS created;
SELECT concord.create_subscription('from_peer', :'peer_dsn');
SELECT concord.wait_for_subscription_sync_complete('from_peer', '60s');
SELECT * FROM fruit ORDER BY id;
SELECT node_name, priority, is_local FROM concord.node ORDER BY node_name;
\c concord_peer
INSERT INTO fruit VALUES (3, 'plum');
UPDATE fruit SET name = 'green apple' WHERE id = 1;
DELETE FROM fruit WHERE id = 2;
SELECT pg_current_wal_lsn() AS peer_lsn \gset
\c contrib_regression
SELECT concord.wait_for_apply('from_peer', :'peer_lsn', '60s');
SELECT * FROM fruit ORDER BY id;
SELECT subscription_name, provider_node, status, slot_name LIKE 'concord_%' AS slot_named,
       applied_lsn >= :'peer_lsn' AS caught_up, lag_bytes, last_error
  FROM concord.subscription_status;

-- disable, write meanwhile, enable: nothing lost
SELECT concord.alter_subscription_disable('from_peer');
SELECT status FROM concord.subscription_status;
\c concord_peer
INSERT INTO fruit VALUES (4, 'fig');
SELECT pg_current_wal_lsn() AS peer_lsn \gset
\c contrib_regression
SELECT concord.alter_subscription_enable('from_peer');
SELECT concord.wait_for_apply('from_peer', :'peer_lsn', '60s');
SELECT * FROM fruit ORDER BY id;

-- resynchronize one table after local damage
SET session_replication_role = replica;
DELETE FROM fruit WHERE id = 4;
RESET session_replication_role;
SELECT concord.alter_subscription_resynchronize_table('from_peer', 'fruit');
SELECT concord.wait_for_subscription_sync_complete('from_peer', '60s');
SELECT * FROM fruit ORDER BY id;

-- a node with subscriptions cannot be dropped, nor the extension
SELECT concord.drop_node('prov');
DROP EXTENSION concord;

-- a subscription created in a transaction that rolls back leaves no slot:
-- the manager drops it, after the rollback
BEGIN;
SELECT concord.create_subscription('rolled_back', :'peer_dsn', synchronize_data := false) > 0 AS created;
ROLLBACK;
\c concord_peer
DO $$
BEGIN
    FOR i IN 1 .. 6000 LOOP
        EXIT WHEN (SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical') = 1;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
SELECT count(*) AS slots_of_from_peer_only FROM pg_replication_slots WHERE slot_type = 'logical';
\c contrib_regression

-- drop removes the slot on the provider and the origins here
SELECT concord.drop_subscription('from_peer');
SELECT concord.drop_subscription('from_peer');
SELECT concord.drop_subscription('from_peer', ifexists := true);
SELECT count(*) AS origins FROM pg_replication_origin WHERE roname LIKE 'concord%';
\c concord_peer
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_type = 'logical';
\c contrib_regression
DROP DATABASE concord_peer WITH (FORCE);
DROP TABLE fruit;
