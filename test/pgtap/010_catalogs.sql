-- pgTAP: the extension and its catalogs (SPEC sections 1-3).
BEGIN;
SELECT plan(41);

-- The extension: schema concord, not relocatable, version 0.3.0.
SELECT has_schema('concord', 'schema concord exists');
SELECT has_extension('concord', 'concord', 'extension concord lives in schema concord');
SELECT is(extrelocatable, false, 'concord is not relocatable')
  FROM pg_extension WHERE extname = 'concord';
SELECT is(extversion, '0.3.0', 'concord is at version 0.3.0')
  FROM pg_extension WHERE extname = 'concord';
SELECT is(extnamespace::regnamespace::text, 'concord', 'the extension schema is concord')
  FROM pg_extension WHERE extname = 'concord';

-- concord.node
SELECT has_table('concord', 'node', 'table concord.node exists');
SELECT has_pk('concord', 'node', 'concord.node has a primary key');
SELECT col_is_pk('concord', 'node', 'node_id', 'concord.node is keyed by node_id');
SELECT col_is_unique('concord', 'node', 'node_name', 'node names are unique');
SELECT has_column('concord', 'node', c, format('concord.node has column %s', c))
  FROM unnest(ARRAY['node_name', 'dsn', 'priority', 'is_local']) AS c;
SELECT col_type_is('concord', 'node', 'priority', 'integer', 'node priority is an integer');

-- concord.replication_set
SELECT has_table('concord', 'replication_set', 'table concord.replication_set exists');
SELECT has_pk('concord', 'replication_set', 'concord.replication_set has a primary key');
SELECT col_is_pk('concord', 'replication_set', 'set_id', 'concord.replication_set is keyed by set_id');
SELECT col_is_unique('concord', 'replication_set', 'set_name', 'set names are unique');
SELECT has_column('concord', 'replication_set', c, format('concord.replication_set has column %s', c))
  FROM unnest(ARRAY['set_name', 'replicate_insert', 'replicate_update',
                    'replicate_delete', 'replicate_truncate', 'capture']) AS c;

-- concord.replication_set_table
SELECT has_table('concord', 'replication_set_table', 'table concord.replication_set_table exists');
SELECT has_pk('concord', 'replication_set_table', 'concord.replication_set_table has a primary key');
SELECT col_is_pk('concord', 'replication_set_table', ARRAY['set_id', 'set_reloid'],
                 'concord.replication_set_table is keyed by (set_id, set_reloid)');
SELECT col_type_is('concord', 'replication_set_table', 'set_reloid', 'regclass',
                   'set_reloid is a regclass');

-- concord.subscription
SELECT has_table('concord', 'subscription', 'table concord.subscription exists');
SELECT has_pk('concord', 'subscription', 'concord.subscription has a primary key');
SELECT col_is_pk('concord', 'subscription', 'sub_id', 'concord.subscription is keyed by sub_id');
SELECT col_is_unique('concord', 'subscription', 'sub_name', 'subscription names are unique');

-- Every catalog is user configuration that pg_dump must keep.
SELECT ok(format('concord.%I', t)::regclass = ANY (e.extconfig),
          format('concord.%s is in pg_extension.extconfig (dumped)', t))
  FROM unnest(ARRAY['node', 'replication_set', 'replication_set_table', 'subscription']) AS t,
       pg_extension e
 WHERE e.extname = 'concord';

-- Every table in schema concord has a primary key.
SELECT is_empty($$
    SELECT c.oid::regclass::text
      FROM pg_class c
     WHERE c.relnamespace = 'concord'::regnamespace
       AND c.relkind IN ('r', 'p')
       AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                        WHERE k.conrelid = c.oid AND k.contype = 'p')
$$, 'every table in schema concord has a primary key');

-- Every table in schema concord belongs to the extension.
SELECT is_empty($$
    SELECT c.oid::regclass::text
      FROM pg_class c
     WHERE c.relnamespace = 'concord'::regnamespace
       AND c.relkind IN ('r', 'p', 'v', 'S')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.refclassid = 'pg_extension'::regclass
                          AND d.deptype = 'e')
$$, 'every relation in schema concord is a member of the extension');

-- The housekeeping event trigger is installed and enabled.
SELECT is((SELECT evtevent || ':' || evtenabled::text FROM pg_event_trigger
            WHERE evtname = 'concord_on_sql_drop'),
          'sql_drop:O', 'event trigger concord_on_sql_drop fires on sql_drop');

-- A fresh database is not a node yet and has no sets.
SELECT is((SELECT count(*) FROM concord.node), 0::bigint, 'no node before create_node');
SELECT is((SELECT count(*) FROM concord.replication_set), 0::bigint, 'no set before create_node');

SELECT * FROM finish();
ROLLBACK;
