-- Tables in sets: add, remove, columns, row filters, and what is refused.
\set VERBOSITY default
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, customer text, amount numeric, note text);
CREATE TABLE app.keyless (a int, b text);
CREATE TABLE app.ri_index (a int NOT NULL, b text);
CREATE UNIQUE INDEX ri_index_a ON app.ri_index (a);
ALTER TABLE app.ri_index REPLICA IDENTITY USING INDEX ri_index_a;
CREATE TABLE app.ri_nothing (id int PRIMARY KEY);
ALTER TABLE app.ri_nothing REPLICA IDENTITY NOTHING;
CREATE TABLE app.ri_full (a int, b text);
ALTER TABLE app.ri_full REPLICA IDENTITY FULL;
CREATE TEMP TABLE tmp_t (id int PRIMARY KEY);
CREATE UNLOGGED TABLE app.unlogged_t (id int PRIMARY KEY);
CREATE VIEW app.v AS SELECT * FROM app.orders;
CREATE SEQUENCE app.s;
CREATE TABLE app.parted (id int PRIMARY KEY, region text) PARTITION BY HASH (id);
CREATE TABLE app.parted_0 PARTITION OF app.parted FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE app.parted_1 PARTITION OF app.parted FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE "Quoted Schema Table" (id int PRIMARY KEY, "Weird Col" text);
SELECT concord.create_replication_set('ins', true, false, false, true) > 0 AS created;

SELECT catalog_state() AS before \gset

-- relations that cannot be replicated
SELECT concord.replication_set_add_table('default', 'app.keyless');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.ri_nothing');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'tmp_t');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.unlogged_t');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.v');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.s');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'pg_class');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'concord.node');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.nope');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 999999::oid::regclass);
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('nope', 'app.orders');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', NULL);
\echo :LAST_ERROR_SQLSTATE

-- column lists
SELECT concord.replication_set_add_table('default', 'app.orders', columns := '{customer,amount}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', columns := '{id,nope}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', columns := '{id,ID}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', columns := '{id,id}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', columns := '{id,xmin}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', columns := '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', columns := '{id,NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.ri_index', columns := '{b}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.ri_full', columns := '{a}');
\echo :LAST_ERROR_SQLSTATE

-- row filters
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'id >');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'id + 1');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'id > 0; DROP TABLE app.orders');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'id > 0 FROM pg_class');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'id IN (SELECT 1)');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'EXISTS (SELECT 1 FROM pg_class)');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'count(*) > 0');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'row_number() OVER () > 1');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'id > random()');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'now() > ''2020-01-01''');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'generate_series(1, id) > 0');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'nope > 0');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'xmin::text <> ''''');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'orders IS NOT NULL');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'id > 0 AS x');
\echo :LAST_ERROR_SQLSTATE
-- a set shipping UPDATE/DELETE may only filter on the key ...
SELECT concord.replication_set_add_table('default', 'app.orders', row_filter := 'customer <> ''test''');
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- what is accepted
SELECT concord.replication_set_add_table('default', 'app.orders',
         columns := '{id,customer,amount}', row_filter := 'id > 0 AND id % 2 = 0');
-- ... and an insert-only set on any column
SELECT concord.replication_set_add_table('ins', 'app.orders', row_filter := 'customer <> ''test'' AND amount > 0');
SELECT concord.replication_set_add_table('ins', 'app.keyless');
SELECT concord.replication_set_add_table('default', 'app.ri_index', columns := '{a}');
SELECT concord.replication_set_add_table('default', 'app.ri_full', row_filter := 'b IS NOT NULL');
SELECT concord.replication_set_add_table('default', 'app.parted', synchronize_data := true);
SELECT concord.replication_set_add_table('default', '"Quoted Schema Table"', columns := '{id,Weird Col}');
SELECT set_name, set_reloid, column_list, row_filter
  FROM concord.replication_set_table JOIN concord.replication_set USING (set_id)
 ORDER BY set_name, set_reloid::text;

-- twice in the same set
SELECT catalog_state() AS before \gset
SELECT concord.replication_set_add_table('default', 'app.orders');
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- remove
SELECT concord.replication_set_remove_table('ins', 'app.keyless');
SELECT concord.replication_set_remove_table('ins', 'app.keyless');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_remove_table('nope', 'app.orders');
\echo :LAST_ERROR_SQLSTATE

-- renaming a table or its schema keeps it in its sets
ALTER TABLE app.orders RENAME TO purchase_orders;
ALTER SCHEMA app RENAME TO shop;
SELECT set_name, set_reloid FROM concord.replication_set_table
  JOIN concord.replication_set USING (set_id) ORDER BY set_name, set_reloid::text;

-- dropping a table removes it from every set, also through a cascade
DROP TABLE shop.purchase_orders CASCADE;
SELECT set_name, set_reloid FROM concord.replication_set_table
  JOIN concord.replication_set USING (set_id) ORDER BY set_name, set_reloid::text;
-- dropping one partition keeps its parent in the set
DROP TABLE shop.parted_1;
SELECT count(*) AS parted_member FROM concord.replication_set_table
 WHERE set_reloid = 'shop.parted'::regclass;
DROP SCHEMA shop CASCADE;
SELECT set_name, set_reloid FROM concord.replication_set_table
  JOIN concord.replication_set USING (set_id) ORDER BY set_name, set_reloid::text;
DROP TABLE "Quoted Schema Table";
SELECT count(*) AS memberships FROM concord.replication_set_table;
SELECT concord.drop_replication_set('ins');
