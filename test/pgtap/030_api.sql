-- pgTAP: the SQL API of SPEC sections 2-3 (names, argument names, types,
-- defaults and results), and the behaviour of create_node it promises.
BEGIN;
SELECT plan(41);

-- name, argument types, result, pg_get_function_arguments() text
CREATE TEMP TABLE api (fname name, args name[], result text, arguments text);
INSERT INTO api VALUES
  ('create_node', '{name,text,integer}', 'oid',
   'node_name name, dsn text, priority integer DEFAULT 0'),
  ('alter_node', '{name,text,integer}', 'void',
   'node_name name, dsn text DEFAULT NULL::text, priority integer DEFAULT NULL::integer'),
  ('drop_node', '{name,boolean}', 'boolean',
   'node_name name, ifexists boolean DEFAULT false'),
  ('create_replication_set', '{name,boolean,boolean,boolean,boolean,text}', 'oid',
   'set_name name, replicate_insert boolean DEFAULT true, replicate_update boolean DEFAULT true, '
   'replicate_delete boolean DEFAULT true, replicate_truncate boolean DEFAULT true, '
   'capture text DEFAULT ''logical''::text'),
  ('alter_replication_set', '{name,boolean,boolean,boolean,boolean,text}', 'oid',
   'set_name name, replicate_insert boolean DEFAULT NULL::boolean, '
   'replicate_update boolean DEFAULT NULL::boolean, replicate_delete boolean DEFAULT NULL::boolean, '
   'replicate_truncate boolean DEFAULT NULL::boolean, capture text DEFAULT NULL::text'),
  ('drop_replication_set', '{name,boolean}', 'boolean',
   'set_name name, ifexists boolean DEFAULT false'),
  ('replication_set_add_table', '{name,regclass,boolean,text[],text}', 'boolean',
   'set_name name, relation regclass, synchronize_data boolean DEFAULT false, '
   'columns text[] DEFAULT NULL::text[], row_filter text DEFAULT NULL::text'),
  ('replication_set_add_all_tables', '{name,text[],boolean}', 'integer',
   'set_name name, schema_names text[], synchronize_data boolean DEFAULT false'),
  ('replication_set_remove_table', '{name,regclass}', 'boolean',
   'set_name name, relation regclass');

-- 9 functions x 4 assertions
SELECT has_function('concord', fname, args,
                    format('concord.%s(%s) exists', fname, array_to_string(args, ', ')))
  FROM api ORDER BY fname;
SELECT function_returns('concord', fname, args, result,
                        format('concord.%s returns %s', fname, result))
  FROM api ORDER BY fname;
SELECT volatility_is('concord', fname, args, 'volatile',
                     format('concord.%s is volatile', fname))
  FROM api ORDER BY fname;
SELECT is(pg_get_function_arguments(
              format('concord.%I(%s)', fname, array_to_string(args, ','))::regprocedure),
          arguments,
          format('concord.%s: argument names and defaults', fname))
  FROM api ORDER BY fname;

-- create_node: declares the local node and creates the set 'default'.
SELECT lives_ok($$SELECT concord.create_node('tap_node', 'host=127.0.0.1 dbname=tap', 7)$$,
                'create_node works');
SELECT is((SELECT string_agg(concat_ws('|', node_name, dsn, priority, is_local), ';')
             FROM concord.node),
          'tap_node|host=127.0.0.1 dbname=tap|7|t',
          'concord.node holds the local node');
SELECT is((SELECT string_agg(concat_ws('|', set_name, replicate_insert, replicate_update,
                                       replicate_delete, replicate_truncate, capture), ';')
             FROM concord.replication_set),
          'default|t|t|t|t|logical',
          'create_node created the set default, shipping everything');

-- replication_set_add_table: a keyed table joins 'default'.
CREATE TABLE public.tap_keyed (id integer PRIMARY KEY, v text);
SELECT is(concord.replication_set_add_table('default', 'public.tap_keyed'), true,
          'replication_set_add_table returns true');
SELECT is((SELECT string_agg(concat_ws('|', s.set_name, t.set_reloid), ';')
             FROM concord.replication_set_table t
             JOIN concord.replication_set s USING (set_id)),
          'default|tap_keyed',
          'the table is listed in concord.replication_set_table');

SELECT * FROM finish();
ROLLBACK;
