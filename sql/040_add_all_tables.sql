-- replication_set_add_all_tables: every eligible table, all or nothing.
\set VERBOSITY default
CREATE SCHEMA s1;
CREATE SCHEMA s2;
CREATE TABLE s1.a (id int PRIMARY KEY);
CREATE TABLE s1.b (id int PRIMARY KEY);
CREATE TABLE s1.p (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE s1.p_1 PARTITION OF s1.p FOR VALUES FROM (0) TO (100);
CREATE UNLOGGED TABLE s1.u (id int PRIMARY KEY);
CREATE VIEW s1.v AS SELECT 1 AS x;
CREATE TABLE s2.c (id int PRIMARY KEY);
CREATE TABLE s2.nokey (x int);

SELECT catalog_state() AS before \gset
-- one table without a key refuses the whole call
SELECT concord.replication_set_add_all_tables('default', '{s1,s2}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_all_tables('default', '{s1,nope}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_all_tables('nope', '{s1}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_all_tables('default', '{s1,NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT concord.replication_set_add_all_tables('default', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT catalog_state() = :'before' AS unchanged;

-- partitions come through their parent; unlogged tables and views are skipped
SELECT concord.replication_set_add_all_tables('default', '{s1}');
SELECT set_reloid FROM concord.replication_set_table ORDER BY set_reloid::text;
-- tables already in the set are not counted again
SELECT concord.replication_set_add_table('default', 's2.c');
SELECT concord.replication_set_add_all_tables('default', '{s1,s1}');
-- an insert-only set takes tables without keys
SELECT concord.create_replication_set('ins', true, false, false, false) > 0 AS created;
SELECT concord.replication_set_add_all_tables('ins', '{s2}', synchronize_data := true);
SELECT set_name, set_reloid FROM concord.replication_set_table
  JOIN concord.replication_set USING (set_id) ORDER BY set_name, set_reloid::text;

DROP SCHEMA s1, s2 CASCADE;
SELECT count(*) AS memberships FROM concord.replication_set_table;
SELECT concord.drop_replication_set('ins');
