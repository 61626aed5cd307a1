-- The concord output plugin, read through its own protocol decoder.
\set VERBOSITY default
SELECT concord.create_node('prov', 'host=127.0.0.1 dbname=contrib_regression', 7) > 0 AS created;
CREATE TABLE items (id int PRIMARY KEY, name text, qty int, payload text);
CREATE TABLE other (id int PRIMARY KEY, v text);
CREATE TABLE filtered (id int PRIMARY KEY, v text);
CREATE TABLE full_ident (a int, b text);
ALTER TABLE full_ident REPLICA IDENTITY FULL;
SELECT concord.replication_set_add_table('default', 'items');
SELECT concord.replication_set_add_table('default', 'full_ident');
SELECT concord.replication_set_add_table('default', 'filtered',
         columns := '{id}', row_filter := 'id % 2 = 0');
SELECT concord.create_replication_set('side') > 0 AS created;
SELECT concord.replication_set_add_table('side', 'other');

SELECT 'init' FROM pg_create_logical_replication_slot('regress_concord', 'concord');

-- a view over the stream, for the sets asked for
CREATE FUNCTION stream(sets text DEFAULT 'default', fwd text DEFAULT '', sub text DEFAULT 'subnode')
RETURNS SETOF text LANGUAGE sql AS $$
  SELECT concord.protocol_describe(data)
    FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
           'proto_version', '1', 'replication_sets', sets,
           'forward_origins', fwd, 'subscriber_node', sub)
$$;

INSERT INTO items VALUES (1, 'apple', 10, NULL), (2, 'pear', NULL, 'x');
UPDATE items SET qty = qty + 1 WHERE id = 1;
UPDATE items SET id = 3 WHERE id = 2;
DELETE FROM items WHERE id = 1;
INSERT INTO other VALUES (1, 'not in default');
INSERT INTO full_ident VALUES (1, 'one');
UPDATE full_ident SET b = 'uno';
DELETE FROM full_ident;
-- row filter and column list: only even ids, only the id column
INSERT INTO filtered VALUES (1, 'odd'), (2, 'even');
UPDATE filtered SET id = 4 WHERE id = 1;    -- moves into the filter: INSERT
UPDATE filtered SET id = 5 WHERE id = 2;    -- moves out of the filter: DELETE
UPDATE filtered SET v = 'still even' WHERE id = 4;
TRUNCATE items, other;
SELECT * FROM stream();

-- version 2: the messages of a transaction travel in one CopyData message
-- (described a line per message), and they are the messages of version 1
SELECT n AS copydata, concord.protocol_describe(data, 2)
  FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
         'proto_version', '2', 'subscriber_node', 'subnode')
       WITH ORDINALITY AS c(lsn, xid, data, n);
SELECT (SELECT string_agg(m, E'\n' ORDER BY n) FROM stream() WITH ORDINALITY AS s(m, n)) =
       (SELECT string_agg(concord.protocol_describe(data, 2), E'\n' ORDER BY n)
          FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
                 'proto_version', '2', 'subscriber_node', 'subnode')
               WITH ORDINALITY AS c(lsn, xid, data, n)) AS same_messages;
-- a database whose concord was installed before protocol_describe had its
-- second argument still declares it with one: the library reads version 1
CREATE FUNCTION describe_one_arg(bytea) RETURNS text
  AS '$libdir/concord', 'concord_protocol_describe' LANGUAGE C STRICT IMMUTABLE;
SELECT describe_one_arg(data)
  FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
         'proto_version', '1', 'subscriber_node', 'subnode')
 LIMIT 3;
DROP FUNCTION describe_one_arg(bytea);

-- another set, and two sets at once
SELECT * FROM stream('side');
SELECT count(*) AS changes FROM stream('default,side');

-- unchanged TOAST values are marked, never sent as NULL
SELECT count(*) >= 0 AS consumed FROM pg_logical_slot_get_binary_changes('regress_concord', NULL, NULL,
           'proto_version', '1');
INSERT INTO items VALUES (10, 'big', 1, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 600) i));
UPDATE items SET qty = 2 WHERE id = 10;
SELECT left(s, 60) AS message, length(s) > 10000 AS long FROM stream() s;

-- origins: changes applied from elsewhere are forwarded only when asked,
-- and never back to their origin
SELECT count(*) >= 0 AS consumed FROM pg_logical_slot_get_binary_changes('regress_concord', NULL, NULL,
           'proto_version', '1');
SELECT pg_replication_origin_create('concord_1_faraway') > 0 AS origin_created;
SELECT pg_replication_origin_session_setup('concord_1_faraway');
INSERT INTO items VALUES (20, 'from faraway', 1, NULL);
SELECT pg_replication_origin_session_reset();
INSERT INTO items VALUES (21, 'local', 1, NULL);
SELECT * FROM stream(fwd := '');
SELECT * FROM stream(fwd := 'all');
SELECT * FROM stream(fwd := 'faraway');
SELECT * FROM stream(fwd := 'someone_else');
SELECT * FROM stream(fwd := 'all', sub := 'faraway');

-- membership changes are seen at their place in the stream
SELECT count(*) >= 0 AS consumed FROM pg_logical_slot_get_binary_changes('regress_concord', NULL, NULL,
           'proto_version', '1');
INSERT INTO other VALUES (2, 'before');
SELECT concord.replication_set_add_table('default', 'other');
INSERT INTO other VALUES (3, 'after');
SELECT concord.replication_set_remove_table('default', 'other');
INSERT INTO other VALUES (4, 'removed');
SELECT * FROM stream();

-- version 2: a large transaction travels in pieces of about 64 kB
SELECT count(*) >= 0 AS consumed FROM pg_logical_slot_get_binary_changes('regress_concord', NULL, NULL,
           'proto_version', '1');
INSERT INTO items SELECT i, repeat('x', 100), i, NULL FROM generate_series(100, 2099) i;
SELECT count(*) > 1 AS pieces, max(length(data)) < 66 * 1024 AS bounded,
       sum(array_length(string_to_array(concord.protocol_describe(data, 2), E'\n'), 1)) AS messages
  FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
         'proto_version', '2');

-- version 3: COMMIT carries the end LSN on the origin node: its own for a
-- local transaction, the one apply recorded (concord.origin_lsn) for a
-- forwarded one, none for a forwarded one without it
SELECT count(*) >= 0 AS consumed FROM pg_logical_slot_get_binary_changes('regress_concord', NULL, NULL,
           'proto_version', '1');
INSERT INTO items VALUES (30, 'local', 1, NULL);
SELECT pg_replication_origin_session_setup('concord_1_faraway');
BEGIN;
INSERT INTO items VALUES (31, 'from faraway, with its LSN', 1, NULL);
SELECT pg_logical_emit_message(true, 'concord.origin_lsn', '\x0000000012345678'::bytea) > '0/0' AS logged;
COMMIT;
INSERT INTO items VALUES (32, 'from faraway, without', 1, NULL);
SELECT pg_replication_origin_session_reset();
SELECT regexp_replace(concord.protocol_describe(data, 3),
                      'origin-lsn (?!0/12345678)[0-9A-F]+/[0-9A-F]+', 'origin-lsn <its own>', 'g')
  FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
         'proto_version', '3', 'forward_origins', 'all');

-- version 3: MARKs, between transactions: this node's own (causal_token)
-- always, another node's (as apply logs them again) only where the
-- subscriber takes that node's changes; none for version 2
SELECT count(*) >= 0 AS consumed FROM pg_logical_slot_get_binary_changes('regress_concord', NULL, NULL,
           'proto_version', '1');
SELECT concord.causal_token() IS NOT NULL AS token;
SELECT pg_logical_emit_message(false, 'concord.mark',
         '\x000000000012345678'::bytea || convert_to('faraway', 'UTF8')) > '0/0' AS relayed;
-- decoding reads flushed WAL: a commit that wrote flushes the marks
-- (other is in no set: its transaction ships nothing)
INSERT INTO other VALUES (5, 'flushes');
SELECT regexp_replace(concord.protocol_describe(data, 3),
                      'at (?!0/12345678)[0-9A-F]+/[0-9A-F]+', 'at <its own>') AS own_only
  FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
         'proto_version', '3');
SELECT regexp_replace(concord.protocol_describe(data, 3),
                      'at (?!0/12345678)[0-9A-F]+/[0-9A-F]+', 'at <its own>') AS forwarding_all
  FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
         'proto_version', '3', 'forward_origins', 'all');
SELECT count(*) AS version_2
  FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL,
         'proto_version', '2', 'forward_origins', 'all');

-- bad options
SELECT * FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL);
SELECT * FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL, 'proto_version', '99');
SELECT * FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL, 'proto_version', 'x');
SELECT * FROM pg_logical_slot_peek_binary_changes('regress_concord', NULL, NULL, 'proto_version', '1', 'bogus', '1');
-- a malformed message is refused by the decoder
SELECT concord.protocol_describe('\x49'::bytea);
SELECT concord.protocol_describe('\x4900000000010002'::bytea);
SELECT concord.protocol_describe('\x5a'::bytea);
SELECT concord.protocol_describe('\x42'::bytea, 4);
-- version 2: a SEEN whose length runs past the message
SELECT concord.protocol_describe('\x5300000000ff0000'::bytea, 2);

SELECT pg_drop_replication_slot('regress_concord');
SELECT pg_replication_origin_drop('concord_1_faraway');
DROP TABLE items, other, filtered, full_ident;
DROP FUNCTION stream;
