-- Nodes: create_node, alter_node, drop_node and their errors.
\set VERBOSITY default
SELECT catalog_state() AS before \gset

-- nothing works before create_node
SELECT concord.create_replication_set('early');
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- bad input to create_node
SELECT concord.create_node(NULL, 'dbname=x');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_node('n1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_node('', 'dbname=x');
\echo :LAST_ERROR_SQLSTATE
-- an invalid dsn is refused and never echoed (it may hold a password)
SELECT concord.create_node('n1', 'password=s3cret broken');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_node('n1', 'postgresql://u:s3cret@host:notaport/db?bogus=1');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_node('n1', '');
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- the node and its default set
SELECT concord.create_node('n1', 'host=127.0.0.1 dbname=contrib_regression', priority := 5) AS new_id \gset
SELECT node_id = :new_id AS returns_node_id FROM concord.node WHERE node_name = 'n1';
SELECT node_name, dsn, priority, is_local FROM concord.node;
SELECT set_name, replicate_insert, replicate_update, replicate_delete,
       replicate_truncate, capture FROM concord.replication_set;
SELECT catalog_state() AS before \gset

-- only one local node per database
SELECT concord.create_node('n2', 'dbname=other');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.create_node('n1', 'dbname=other');
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- alter_node
SELECT concord.alter_node('n1', priority := 10);
SELECT node_name, dsn, priority FROM concord.node;
SELECT concord.alter_node('n1', dsn := 'host=localhost dbname=contrib_regression');
SELECT node_name, dsn, priority FROM concord.node;
SELECT concord.alter_node('n1');
SELECT node_name, dsn, priority FROM concord.node;
SELECT catalog_state() AS before \gset
SELECT concord.alter_node('nope', priority := 1);
\echo :LAST_ERROR_SQLSTATE
SELECT concord.alter_node('n1', dsn := 'password=s3cret broken');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.alter_node(NULL, priority := 1);
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- drop_node
SELECT concord.drop_node('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.drop_node('nope', ifexists := true);
SELECT catalog_state() = :'before' AS unchanged;

-- refused while a subscription exists (a row as create_subscription writes it)
INSERT INTO concord.subscription (sub_id, sub_name, provider_node_id, provider_dsn,
        slot_name, replication_sets, forward_origins, synchronize_data, apply_delay)
VALUES (1, 'sub1', 4242, 'dbname=x', 'slot1', '{default}', '{}', true, '0');
SELECT catalog_state() AS before \gset
SELECT concord.drop_node('n1');
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;
DELETE FROM concord.subscription;

-- dropping the local node removes its sets; it can be created again
SELECT concord.create_replication_set('extra') > 0 AS created;
SELECT concord.drop_node('n1');
SELECT count(*) AS nodes FROM concord.node;
SELECT count(*) AS sets FROM concord.replication_set;
SELECT concord.create_node('n1', 'host=127.0.0.1 dbname=contrib_regression') > 0 AS created;
SELECT set_name FROM concord.replication_set;

-- a node's id depends on its name only
SELECT node_id AS first_id FROM concord.node \gset
SELECT concord.drop_node('n1');
SELECT concord.create_node('n1', 'host=127.0.0.1 dbname=contrib_regression', 5) = :first_id AS same_id;
