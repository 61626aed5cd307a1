-- Anti-entropy's part on each node (issue 13): concord.table_digest() and
-- concord.table_digest_rows().  Equal rows must give equal digests on every
-- node, whatever the column order and the session's settings; different
-- rows different ones, NULL and empty string and column boundaries
-- included.  This database is node prov (095), which row versions name.
\set VERBOSITY default
SELECT node_name AS local_node FROM concord.node WHERE is_local \gset

-- The digest of one row of a one-row table (its key is 1).
CREATE FUNCTION digest_of(rel regclass) RETURNS text LANGUAGE sql AS
  $$ SELECT digest FROM concord.table_digest_rows(rel) $$;

-- NULL, empty string and the text 'NULL' differ.
CREATE TABLE d_null (id int PRIMARY KEY, v text);
CREATE TABLE d_empty (id int PRIMARY KEY, v text);
CREATE TABLE d_word (id int PRIMARY KEY, v text);
INSERT INTO d_null VALUES (1, NULL);
INSERT INTO d_empty VALUES (1, '');
INSERT INTO d_word VALUES (1, 'NULL');
SELECT count(DISTINCT digest_of(r)) AS distinct_digests
  FROM unnest(ARRAY['d_null', 'd_empty', 'd_word']::regclass[]) r;

-- Column boundaries: ('a|b', 'c') and ('a', 'b|c') differ.
CREATE TABLE d_left (id int PRIMARY KEY, a text, b text);
CREATE TABLE d_right (id int PRIMARY KEY, a text, b text);
INSERT INTO d_left VALUES (1, 'a|b', 'c');
INSERT INTO d_right VALUES (1, 'a', 'b|c');
SELECT digest_of('d_left') <> digest_of('d_right') AS boundaries_differ;

-- The same row in a table whose columns come in another order, one of
-- them dropped in between: the same digest.
CREATE TABLE d_order1 (id int PRIMARY KEY, a text, b numeric, c timestamptz);
CREATE TABLE d_order2 (c timestamptz, gone int, b numeric, id int PRIMARY KEY, a text);
ALTER TABLE d_order2 DROP COLUMN gone;
INSERT INTO d_order1 VALUES (1, 'x', 3000.0, '2026-12-07 10:00:00+00');
INSERT INTO d_order2 (id, a, b, c) VALUES (1, 'x', 3000.0, '2026-12-07 10:00:00+00');
SELECT digest_of('d_order1') = digest_of('d_order2') AS column_order_ignored;

-- A column named t (the alias of the table in the digest's query) does
-- not stand for the whole row; quoted, upper-case and spaced names too.
CREATE TABLE d_col_t1 (id int PRIMARY KEY, t text, "Odd Name" int);
CREATE TABLE d_col_t2 (id int PRIMARY KEY, t text, "Odd Name" int);
INSERT INTO d_col_t1 VALUES (1, 'same', 1);
INSERT INTO d_col_t2 VALUES (1, 'same', 2);
SELECT digest_of('d_col_t1') <> digest_of('d_col_t2') AS whole_row_digested,
       (SELECT key FROM concord.table_digest_rows('d_col_t1')) AS key;

-- The key is the key's columns: not those an INCLUDE adds; a composite
-- key by column name; a replica identity index before the primary key.
CREATE TABLE d_incl (id int, at int, v text, PRIMARY KEY (id) INCLUDE (at));
INSERT INTO d_incl VALUES (1, 10, 'x');
SELECT key FROM concord.table_digest_rows('d_incl');
CREATE TABLE d_comp (b int, a text, v text, PRIMARY KEY (b, a));
INSERT INTO d_comp VALUES (2, 'k', 'x');
SELECT key FROM concord.table_digest_rows('d_comp');
CREATE TABLE d_ident (id int PRIMARY KEY, code text NOT NULL, v text);
CREATE UNIQUE INDEX d_ident_code ON d_ident (code);
ALTER TABLE d_ident REPLICA IDENTITY USING INDEX d_ident_code;
INSERT INTO d_ident VALUES (1, 'c1', 'x');
SELECT key FROM concord.table_digest_rows('d_ident');

-- numeric scale is part of the value: 3000.0 and 3000.00 differ.
CREATE TABLE d_scale (id int PRIMARY KEY, a text, b numeric, c timestamptz);
INSERT INTO d_scale VALUES (1, 'x', 3000.00, '2026-12-07 10:00:00+00');
SELECT digest_of('d_order1') <> digest_of('d_scale') AS scale_differs;

-- The session's settings change nothing.
CREATE TABLE d_types (id int PRIMARY KEY, t timestamptz, d date, i interval,
                      f float8, b bytea, m money, r tstzrange, dr daterange);
INSERT INTO d_types VALUES (1, '2026-12-07 10:00:00+00', '2026-12-07', '1 day 2 hours',
                            0.1::float8 + 0.2, '\x00ff', 12.5,
                            '[2026-12-07 10:00+00, 2026-12-08 10:00+00)', '[2026-12-07, 2026-12-09)');
SELECT digest_of('d_types') AS plain \gset
SET TimeZone = 'Asia/Tokyo';
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = 'iso_8601';
SET extra_float_digits = -3;
SET bytea_output = 'escape';
SET lc_monetary = 'C.UTF-8';
SELECT digest_of('d_types') = :'plain' AS settings_ignored;
RESET ALL;

-- A value stored out of line (TOAST) is read whole.
CREATE TABLE d_toast (id int PRIMARY KEY, v text);
INSERT INTO d_toast SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 5000) g;
SELECT digest_of('d_toast') AS toasted \gset
SELECT pg_relation_size(reltoastrelid) > 0 AS stored_out_of_line
  FROM pg_class WHERE oid = 'd_toast'::regclass;
UPDATE d_toast SET v = v || 'x';
SELECT digest_of('d_toast') <> :'toasted' AS toasted_changes_digest;

-- Buckets: a key falls in the same bucket whatever the table; the
-- per-bucket digest is the XOR of its rows'; counts add up.
CREATE TABLE d_many (id int PRIMARY KEY, v text);
INSERT INTO d_many SELECT g, 'v' || g FROM generate_series(1, 1000) g;
SELECT sum(row_count) AS rows, count(*) <= 16 AS at_most_16_buckets,
       sum(in_flight) AS in_flight
  FROM concord.table_digest('d_many', NULL, 16);
SELECT bool_and(a.bucket = b.bucket) AS same_buckets
  FROM concord.table_digest_rows('d_many', NULL, 16) a
  JOIN concord.table_digest_rows('d_order1', NULL, 16) b USING (key);
-- One changed row changes its bucket's digest only.
CREATE TEMP TABLE before AS SELECT * FROM concord.table_digest('d_many', NULL, 16);
UPDATE d_many SET v = 'changed' WHERE id = 500;
SELECT count(*) AS buckets_changed,
       bool_and(t.bucket = (SELECT bucket FROM concord.table_digest_rows('d_many', NULL, 16)
                             WHERE key = '{"id": 500}')) AS the_rows_bucket
  FROM concord.table_digest('d_many', NULL, 16) t JOIN before b USING (bucket)
 WHERE t.digest <> b.digest;
SELECT count(*) AS rows_listed
  FROM concord.table_digest_rows('d_many', NULL, 16,
        ARRAY[(SELECT bucket FROM concord.table_digest_rows('d_many', NULL, 16) WHERE key = '{"id": 500}')]);

-- Fences: a row whose origin has no fence, or is not older than its
-- fence, is in flight and left out of the digest.
SELECT sum(row_count) AS settled, sum(in_flight) AS in_flight
  FROM concord.table_digest('d_many', '{}', 16);
SELECT sum(row_count) AS settled, sum(in_flight) AS in_flight
  FROM concord.table_digest('d_many', jsonb_build_object(:'local_node', now() + interval '1 day'), 16);
SELECT settled, origin_node = :'local_node' AS written_here FROM concord.table_digest_rows('d_many',
        jsonb_build_object(:'local_node', now() - interval '1 day'), 16) WHERE key = '{"id": 500}';

-- The rows of some keys (the second look of a diff): a row, a key
-- deleted (its tombstone's version), a key never there; the digest is the
-- one table_digest_rows gives.
SELECT concord.replication_set_add_table('default', 'd_many');
DELETE FROM d_many WHERE id = 7;
SELECT k.key, k.row_data, k.digest = r.digest AS same_digest, k.settled, k.deleted,
       k.origin_node = :'local_node' AS written_here
  FROM concord.table_digest_keys('d_many', NULL,
        '[{"id": 500}, {"id": 7}, {"id": 123456}]') WITH ORDINALITY k
  LEFT JOIN concord.table_digest_rows('d_many') r USING (key)
 ORDER BY k.ordinality;
-- A delete newer than the fence is in flight.
SELECT key, settled, deleted FROM concord.table_digest_keys('d_many',
        jsonb_build_object(:'local_node', now() - interval '1 day'), '[{"id": 7}, {"id": 8}]');
SELECT concord.replication_set_remove_table('default', 'd_many');
-- A tombstone's key is each column's output text: a boolean's is t, a
-- char(n)'s keeps its blanks (their casts to text differ).
CREATE TABLE d_tkey (b boolean, c char(4), PRIMARY KEY (b, c));
INSERT INTO d_tkey VALUES (true, 'ab'), (false, 'cd');
SELECT concord.replication_set_add_table('default', 'd_tkey');
DELETE FROM d_tkey WHERE b;
SELECT key, deleted FROM concord.table_digest_keys('d_tkey', NULL, '[{"b": true, "c": "ab  "}, {"b": false, "c": "cd  "}]');
SELECT concord.replication_set_remove_table('default', 'd_tkey');
DROP TABLE d_tkey;
SELECT * FROM concord.table_digest_keys('d_many', NULL, '{"id": 1}');
SELECT * FROM concord.table_digest_keys('d_many', NULL, '[1]');

-- Bad input.
SELECT * FROM concord.table_digest('d_many', NULL, 0);
CREATE TABLE d_nokey (a int);
SELECT * FROM concord.table_digest('d_nokey');
SELECT * FROM concord.table_digest('d_many', '[1, 2]', 16);
-- A row of an origin that is not a node (a replication that is not
-- concord's wrote it) settled if it committed before every fence; one of
-- a node that no fence names (this node, here) is in flight.
SELECT pg_replication_origin_create('by_hand') > 0 AS made;
SELECT pg_replication_origin_session_setup('by_hand');
INSERT INTO d_many VALUES (5000, 'by hand');
SELECT pg_replication_origin_session_reset();
SELECT sum(row_count) AS settled, sum(in_flight) AS in_flight
  FROM concord.table_digest('d_many', jsonb_build_object('gone', now() + interval '1 day'), 16);
SELECT key, settled, origin_node FROM concord.table_digest_rows('d_many',
        jsonb_build_object('gone', now() + interval '1 day'), 16) WHERE key = '{"id": 5000}';
SELECT pg_replication_origin_drop('by_hand');
-- A row's digest is md5() of its jsonb text as UTF-8 (concord has its own
-- MD5): rows whose texts are of every length from a few bytes to several
-- 64-byte blocks, some with characters of several bytes.
CREATE TABLE d_len (id int PRIMARY KEY, v text);
INSERT INTO d_len SELECT g, repeat(CASE WHEN g % 3 = 0 THEN 'é' ELSE 'x' END, g) FROM generate_series(0, 300) g;
SELECT count(*) AS rows, count(*) FILTER (WHERE r.digest = md5(convert_to(to_jsonb(d)::text, 'UTF8'))) AS same
  FROM concord.table_digest_rows('d_len') r JOIN d_len d ON d.id = (r.key->>'id')::int;
DROP TABLE d_len;

-- A read in steps (what a diff runs, one statement per step) gives what
-- the one-shot functions give: on a table whose updates left dead rows
-- and out-of-order blocks, and on a partitioned table; steps of 37 rows.
CREATE FUNCTION read_in_steps(rel regclass, fences jsonb, buckets int, only_b int[])
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    b bigint := 0;
    steps int := 0;
BEGIN
    LOOP
        b := concord.table_digest_step(rel, fences, buckets, only_b, b, 37);
        steps := steps + 1;
        EXIT WHEN b IS NULL;
    END LOOP;
    RETURN steps;
END $$;
UPDATE d_many SET v = v || '+' WHERE id % 3 = 0;
SELECT read_in_steps('d_many', jsonb_build_object('gone', now() + interval '1 day'), 16, NULL) > 3 AS many_steps;
SELECT count(*) AS buckets,
       count(*) FILTER (WHERE o.bucket IS NULL OR s.bucket IS NULL
                        OR (o.*) IS DISTINCT FROM (s.*)) AS unlike
  FROM concord.table_digest_step_buckets() s
  FULL JOIN concord.table_digest('d_many', jsonb_build_object('gone', now() + interval '1 day'), 16) o
    USING (bucket);
SELECT read_in_steps('d_many', NULL, 16, '{3, 11}') > 3 AS many_steps;
SELECT count(*) AS rows_listed,
       count(*) FILTER (WHERE o.key IS NULL OR s.key IS NULL OR o.digest <> s.digest
                        OR o.bucket <> s.bucket OR o.settled <> s.settled) AS unlike
  FROM concord.table_digest_step_rows() s
  FULL JOIN concord.table_digest_rows('d_many', NULL, 16, '{3, 11}') o USING (key);
CREATE TABLE d_part (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE d_part1 PARTITION OF d_part FOR VALUES FROM (0) TO (300);
CREATE TABLE d_part2 PARTITION OF d_part FOR VALUES FROM (300) TO (1000);
INSERT INTO d_part SELECT g, 'p' || g FROM generate_series(0, 999) g;
SELECT read_in_steps('d_part', NULL, 8, NULL) > 3 AS many_steps;
SELECT sum(row_count) AS rows,
       (SELECT string_agg(digest, ',' ORDER BY bucket) FROM concord.table_digest('d_part', NULL, 8))
       = string_agg(digest, ',' ORDER BY bucket) AS same_digests
  FROM concord.table_digest_step_buckets();
-- Each step goes on from where the last stopped, in the same session;
-- a result is there once the read ended, and only once.
SELECT concord.table_digest_step('d_many', NULL, 16, NULL, 5, 100);
SELECT concord.table_digest_step('d_many', NULL, 16, NULL, 0, 100) > 0 AS begun;
SELECT * FROM concord.table_digest_step_buckets();
SELECT concord.table_digest_step('d_part', NULL, 16, NULL, 1, 100);
SELECT concord.table_digest_step('d_many', NULL, 16, NULL, 0, 0);
-- A table rewritten between two steps (its settled rows moved) fails the
-- read, which ends; a new read goes.
SELECT concord.table_digest_step('d_many', NULL, 16, NULL, 0, 100) AS at \gset
VACUUM FULL d_many;
SELECT concord.table_digest_step('d_many', NULL, 16, NULL, :at, 100);
SELECT concord.table_digest_step('d_many', NULL, 16, NULL, :at, 100);
-- A tree with a foreign table is not read in steps (its TIDs are not
-- blocks of its own).
CREATE FOREIGN DATA WRAPPER d_fdw;
CREATE SERVER d_server FOREIGN DATA WRAPPER d_fdw;
CREATE TABLE d_fkey (id int PRIMARY KEY, v text);
CREATE FOREIGN TABLE d_fchild () INHERITS (d_fkey) SERVER d_server;
SELECT concord.table_digest_step('d_fkey', NULL, 16, NULL, 0, 100);
DROP FOREIGN DATA WRAPPER d_fdw CASCADE;
DROP TABLE d_fkey;
-- A null fence is no fence: the node's rows are in flight; no table, no rows.
SELECT sum(row_count) AS settled, sum(in_flight) AS in_flight
  FROM concord.table_digest('d_many', jsonb_build_object(:'local_node', NULL), 16);
SELECT count(*) AS no_table FROM concord.table_digest(NULL);
SELECT read_in_steps('d_many', NULL, 16, NULL) > 1 AS read;
SELECT count(*) > 0 AS result FROM concord.table_digest_step_buckets();
SELECT count(*) FROM concord.table_digest_step_buckets();
DROP FUNCTION read_in_steps(regclass, jsonb, int, int[]);
DROP TABLE d_part;

-- Not executable by PUBLIC.
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_may_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'concord'::regnamespace
   AND p.proname IN ('table_digest', 'table_digest_rows', 'key_columns',
                     'table_digest_keys', 'table_diff', 'wait_for_diff', 'table_digest_step',
                     'table_digest_step_buckets', 'table_digest_step_rows')
 ORDER BY 1::text;

DROP TABLE d_null, d_empty, d_word, d_left, d_right, d_order1, d_order2, d_scale,
           d_types, d_toast, d_many, d_nokey, d_col_t1, d_col_t2, d_incl, d_comp, d_ident;
DROP FUNCTION digest_of(regclass);
