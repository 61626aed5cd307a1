/*
 * concord install script (source of sql/concord--<version>.sql).
 *
 * The catalogs below are mirrored in src/catalog/tables.h (Anum_
 * constants); keep the column order of both in step.  The C code writes
 * them directly, so they carry only plain btree unique indexes (no partial
 * or expression indexes, no foreign keys): integrity is kept by
 * src/catalog/tables.c.
 *
 * A change here is a new version: bump default_version in concord.control
 * and add sql/concord--OLD--NEW.sql that turns the previous version into
 * this one (test/t/010_upgrade.pl checks that the two give the same
 * objects).
 *
 * The tables the output plugin reads while decoding are user catalog
 * tables: logical decoding may read them with its historic snapshot.
 */

\echo Use "CREATE EXTENSION concord" to load this file. \quit

-- ---------------------------------------------------------------------
-- Catalogs
-- ---------------------------------------------------------------------

CREATE TABLE concord.node (
    node_id     oid         NOT NULL PRIMARY KEY,
    node_name   name        NOT NULL UNIQUE,
    dsn         text        NOT NULL,
    priority    integer     NOT NULL DEFAULT 0,
    is_local    boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (user_catalog_table = true);
COMMENT ON TABLE concord.node IS
    'concord nodes: the local node (is_local) and the peers it has learnt of';

CREATE TABLE concord.replication_set (
    set_id              oid     NOT NULL PRIMARY KEY,
    set_name            name    NOT NULL UNIQUE,
    replicate_insert    boolean NOT NULL DEFAULT true,
    replicate_update    boolean NOT NULL DEFAULT true,
    replicate_delete    boolean NOT NULL DEFAULT true,
    replicate_truncate  boolean NOT NULL DEFAULT true,
    capture             text    NOT NULL DEFAULT 'logical'
) WITH (user_catalog_table = true);
COMMENT ON TABLE concord.replication_set IS
    'replication sets of the local node: named groups of tables and the operations shipped for them';

CREATE TABLE concord.replication_set_table (
    set_id      oid      NOT NULL,
    set_reloid  regclass NOT NULL,
    column_list text[],
    row_filter  text,
    row_filter_expr text,
    PRIMARY KEY (set_id, set_reloid)
) WITH (user_catalog_table = true);
CREATE INDEX replication_set_table_reloid
    ON concord.replication_set_table (set_reloid);
COMMENT ON TABLE concord.replication_set_table IS
    'tables of each replication set, with the shipped columns (NULL: all) and row filter (NULL: all rows)';

CREATE TABLE concord.subscription (
    sub_id              oid      NOT NULL PRIMARY KEY,
    sub_name            name     NOT NULL UNIQUE,
    provider_node_id    oid      NOT NULL,
    provider_dsn        text     NOT NULL,
    slot_name           name     NOT NULL,
    replication_sets    text[]   NOT NULL,
    forward_origins     text[]   NOT NULL,
    synchronize_data    boolean  NOT NULL,
    apply_delay         interval NOT NULL,
    enabled             boolean  NOT NULL DEFAULT true,
    sync_done           boolean  NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_required   boolean  NOT NULL DEFAULT false,
    join_copy_via       oid,
    join_start_lsn      pg_lsn
);
CREATE INDEX subscription_provider
    ON concord.subscription (provider_node_id);
COMMENT ON TABLE concord.subscription IS
    'subscriptions of the local node: what it pulls from which provider';

CREATE TABLE concord.subscription_table (
    sub_id      oid     NOT NULL,
    nspname     name    NOT NULL,
    relname     name    NOT NULL,
    sync_lsn    pg_lsn,
    PRIMARY KEY (sub_id, nspname, relname)
);
COMMENT ON TABLE concord.subscription_table IS
    'per subscription, the provider tables copied and the provider LSN of the copy (NULL: a copy is pending)';

CREATE TABLE concord.conflict_resolver (
    set_reloid      oid     NOT NULL,   -- 0: every table
    conflict_type   text    NOT NULL,   -- '': every type
    resolver        text    NOT NULL,
    handler         regprocedure,
    PRIMARY KEY (set_reloid, conflict_type)
);
COMMENT ON TABLE concord.conflict_resolver IS
    'resolver per table (0: all tables) and conflict type ('''': all types), set by concord.set_conflict_resolver()';

CREATE TABLE concord.conflict_history (
    conflict_id         bigserial   PRIMARY KEY,
    detected_at         timestamptz NOT NULL DEFAULT now(),
    subscription_name   name        NOT NULL,
    relation            text        NOT NULL,
    conflict_type       text        NOT NULL,
    resolver            text        NOT NULL,
    resolution          text        NOT NULL,
    key                 jsonb,
    local_row           jsonb,
    local_origin        name,
    local_commit_ts     timestamptz,
    remote_row          jsonb,
    remote_origin       name        NOT NULL,
    remote_commit_ts    timestamptz NOT NULL,
    remote_lsn          pg_lsn      NOT NULL,
    resolved_row        jsonb,
    error_message       text,
    reapplied_at        timestamptz     -- set by concord.conflict_reapply()
);
CREATE INDEX conflict_history_detected_at ON concord.conflict_history (detected_at);
COMMENT ON TABLE concord.conflict_history IS
    'every conflict this node detected and how it was resolved, written in the same transaction as the resolution';

-- What a conflict handler learns about the conflict besides the two rows.
CREATE TYPE concord.conflict_info AS (
    conflict_type       text,
    relation            regclass,
    subscription_name   name,
    local_origin        name,
    local_commit_ts     timestamptz,
    remote_origin       name,
    remote_commit_ts    timestamptz,
    remote_lsn          pg_lsn
);
COMMENT ON TYPE concord.conflict_info IS
    'the third argument of a conflict handler: handler(local tbl, remote tbl, info concord.conflict_info) RETURNS tbl';

-- A row per deleted key of a replicated table.  Its version (commit
-- timestamp and origin) is that of its own xmin, like any row's, so a
-- remote UPDATE of a deleted row is decided by the same rules.
CREATE TABLE concord.tombstone (
    relid       oid     NOT NULL,
    key         text[]  NOT NULL,
    PRIMARY KEY (relid, key)
);
-- Per peer and origin node: the newest tombstone of that origin removed
-- before the peer had confirmed it (concord.tombstone_retention).  Apply
-- refuses the peer's transactions written before it applied those deletes.
CREATE TABLE concord.tombstone_gap (
    peer            name        NOT NULL,
    origin          name        NOT NULL,
    removed_upto    timestamptz NOT NULL,
    PRIMARY KEY (peer, origin)
);
COMMENT ON TABLE concord.tombstone_gap IS
    'tombstones removed before a peer confirmed them: that peer''s older changes are refused until resynchronized';

COMMENT ON TABLE concord.tombstone IS
    'deleted keys of replicated tables, so that DELETE racing UPDATE converges';

-- Which node each replication origin this database used stood for, and
-- from which transaction on (src/catalog/origin.c).  A row's commit
-- timestamp record keeps only the origin's 16-bit id, and PostgreSQL gives
-- the id of a dropped origin to the next one created (drop_subscription
-- drops its origins): the versions written before keep their node through
-- this history.  Not dumped: its transaction ids mean nothing elsewhere.
CREATE TABLE concord.origin_history (
    roident     oid     NOT NULL,
    since_xid   xid8    NOT NULL,
    node_name   name    NOT NULL,
    PRIMARY KEY (roident, since_xid)
);
COMMENT ON TABLE concord.origin_history IS
    'the node each replication origin id stood for, from the transaction that created the origin on';

-- Which database of which server the local node is (src/catalog/identity.c):
-- a copy of it (pg_basebackup, a restore) differs in one of these, or lacks
-- the marker slot.  Not dumped: a database restored from a dump is a copy.
CREATE TABLE concord.node_identity (
    system_identifier   text        NOT NULL,
    database_oid        oid         NOT NULL PRIMARY KEY,
    marker_slot         name        NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
) WITH (user_catalog_table = true);
COMMENT ON TABLE concord.node_identity IS
    'the server (system identifier), database and marker slot of the local node; a copy of the node differs';

-- Nodes that left the mesh (part_mesh) or were dropped for good
-- (drop_peer): nobody waits for them any more (tombstone removal), though
-- the versions they wrote keep their name.  A node subscribed to again
-- leaves this list.
CREATE TABLE concord.departed_node (
    node_name   name        NOT NULL PRIMARY KEY,
    departed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE concord.departed_node IS
    'nodes that left (part_mesh) or were dropped (drop_peer): tombstone removal no longer waits for them';

SELECT pg_catalog.pg_extension_config_dump('concord.node', '');
SELECT pg_catalog.pg_extension_config_dump('concord.replication_set', '');
SELECT pg_catalog.pg_extension_config_dump('concord.replication_set_table', '');
SELECT pg_catalog.pg_extension_config_dump('concord.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('concord.subscription_table', '');
SELECT pg_catalog.pg_extension_config_dump('concord.conflict_resolver', '');
SELECT pg_catalog.pg_extension_config_dump('concord.departed_node', '');

-- Catalogs holding DSNs (and so possibly passwords) are not for PUBLIC.
REVOKE ALL ON concord.node, concord.subscription FROM PUBLIC;
REVOKE ALL ON concord.replication_set, concord.replication_set_table,
              concord.subscription_table, concord.conflict_resolver,
              concord.conflict_history, concord.tombstone,
              concord.tombstone_gap, concord.node_identity,
              concord.origin_history, concord.departed_node FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Nodes
-- ---------------------------------------------------------------------

CREATE FUNCTION concord.create_node(node_name name, dsn text,
                                    priority integer DEFAULT 0)
RETURNS oid
AS 'MODULE_PATHNAME', 'concord_create_node'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.create_node(name, text, integer) IS
    'declare this database as a concord node; creates the replication set "default"';

CREATE FUNCTION concord.alter_node(node_name name, dsn text DEFAULT NULL,
                                   priority integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'concord_alter_node'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.alter_node(name, text, integer) IS
    'change the dsn or priority of a node';

CREATE FUNCTION concord.drop_node(node_name name, ifexists boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_drop_node'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.drop_node(name, boolean) IS
    'remove a node (refused while subscriptions exist)';

CREATE FUNCTION concord.reclaim_node_identity()
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_reclaim_node_identity'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.reclaim_node_identity() IS
    'records this database of this server as the local node again (after pg_upgrade or a failover); false if it already was';

CREATE FUNCTION concord.node_status_internal(
        OUT node_name name, OUT identity text, OUT detail text, OUT hint text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_node_status'
LANGUAGE C STABLE;
COMMENT ON FUNCTION concord.node_status_internal() IS
    'the rows of the view concord.node_status';

CREATE VIEW concord.node_status AS
    SELECT * FROM concord.node_status_internal();
COMMENT ON VIEW concord.node_status IS
    'the local node, and whether this database is that node or a copy of it';
REVOKE ALL ON concord.node_status FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Replication sets
-- ---------------------------------------------------------------------

CREATE FUNCTION concord.create_replication_set(set_name name,
        replicate_insert boolean DEFAULT true,
        replicate_update boolean DEFAULT true,
        replicate_delete boolean DEFAULT true,
        replicate_truncate boolean DEFAULT true,
        capture text DEFAULT 'logical')
RETURNS oid
AS 'MODULE_PATHNAME', 'concord_create_replication_set'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.create_replication_set(name, boolean, boolean, boolean, boolean, text) IS
    'create a replication set';

CREATE FUNCTION concord.alter_replication_set(set_name name,
        replicate_insert boolean DEFAULT NULL,
        replicate_update boolean DEFAULT NULL,
        replicate_delete boolean DEFAULT NULL,
        replicate_truncate boolean DEFAULT NULL,
        capture text DEFAULT NULL)
RETURNS oid
AS 'MODULE_PATHNAME', 'concord_alter_replication_set'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.alter_replication_set(name, boolean, boolean, boolean, boolean, text) IS
    'change the operations a replication set ships';

CREATE FUNCTION concord.drop_replication_set(set_name name,
        ifexists boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_drop_replication_set'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.drop_replication_set(name, boolean) IS
    'drop a replication set and its table memberships';

CREATE FUNCTION concord.replication_set_add_table(set_name name,
        relation regclass,
        synchronize_data boolean DEFAULT false,
        columns text[] DEFAULT NULL,
        row_filter text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_replication_set_add_table'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.replication_set_add_table(name, regclass, boolean, text[], text) IS
    'add a table to a replication set, optionally limited to some columns and rows';

CREATE FUNCTION concord.row_filter_sql(set_id oid, relation regclass)
RETURNS text
AS 'MODULE_PATHNAME', 'concord_row_filter_sql'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION concord.row_filter_sql(oid, regclass) IS
    'the row filter of a table in a set, as SQL written under fixed settings (for the initial copy); the provider role needs EXECUTE on it and SELECT on concord.replication_set_table';

CREATE FUNCTION concord.replication_set_add_all_tables(set_name name,
        schema_names text[],
        synchronize_data boolean DEFAULT false)
RETURNS integer
AS 'MODULE_PATHNAME', 'concord_replication_set_add_all_tables'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.replication_set_add_all_tables(name, text[], boolean) IS
    'add every eligible table of the given schemas to a replication set; returns how many were added';

CREATE FUNCTION concord.replication_set_remove_table(set_name name,
        relation regclass)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_replication_set_remove_table'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.replication_set_remove_table(name, regclass) IS
    'remove a table from a replication set';

-- ---------------------------------------------------------------------
-- Subscriptions
-- ---------------------------------------------------------------------

CREATE FUNCTION concord.create_subscription(subscription_name name,
        provider_dsn text,
        replication_sets text[] DEFAULT '{default}',
        synchronize_data boolean DEFAULT true,
        forward_origins text[] DEFAULT '{}',
        apply_delay interval DEFAULT '0')
RETURNS oid
AS 'MODULE_PATHNAME', 'concord_create_subscription'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.create_subscription(name, text, text[], boolean, text[], interval) IS
    'subscribe this node to a provider node';

CREATE FUNCTION concord.drop_subscription(subscription_name name,
        ifexists boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_drop_subscription'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.drop_subscription(name, boolean) IS
    'stop and remove a subscription, its replication origins and (when the provider is reachable) its slot';

CREATE FUNCTION concord.alter_subscription_disable(subscription_name name)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_alter_subscription_disable'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.alter_subscription_disable(name) IS
    'stop applying a subscription (its slot keeps the provider''s changes)';

CREATE FUNCTION concord.alter_subscription_enable(subscription_name name)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_alter_subscription_enable'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.alter_subscription_enable(name) IS
    'resume applying a subscription';

CREATE FUNCTION concord.alter_subscription_resynchronize_table(subscription_name name,
        relation regclass)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_alter_subscription_resynchronize_table'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.alter_subscription_resynchronize_table(name, regclass) IS
    'empty a table here and copy it again from the provider';

CREATE FUNCTION concord.wait_for_subscription_sync_complete(subscription_name name,
        timeout interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'concord_wait_for_subscription_sync_complete'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.wait_for_subscription_sync_complete(name, interval) IS
    'wait until the subscription''s initial copy and pending table copies are done';

CREATE FUNCTION concord.wait_for_apply(subscription_name name,
        target_lsn pg_lsn,
        timeout interval DEFAULT '60s')
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_wait_for_apply'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.wait_for_apply(name, pg_lsn, interval) IS
    'read-your-writes: true once everything the provider wrote up to target_lsn is applied here';

CREATE FUNCTION concord.causal_token()
RETURNS text
AS 'MODULE_PATHNAME', 'concord_causal_token'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.causal_token() IS
    'read-your-writes across nodes: what this node holds, per node its own WAL position, for concord.wait_for_token() on another node';

CREATE FUNCTION concord.wait_for_token(token text,
        timeout interval DEFAULT '10s')
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_wait_for_token'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.wait_for_token(text, interval) IS
    'true once this node holds everything the causal token names, from whichever subscription it arrives; false after the timeout';

CREATE FUNCTION concord.fence(timeout interval DEFAULT '1min',
        OUT fence_time timestamptz, OUT fence_lsn pg_lsn, OUT token text,
        OUT receives_from name[])
RETURNS record
AS 'MODULE_PATHNAME', 'concord_fence'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.fence(interval) IS
    'anti-entropy: every transaction of this node that committed before fence_time is before fence_lsn; token for concord.wait_for_token() on the other nodes; receives_from: the nodes whose changes this node receives (its providers and the origins they forward, all: every origin)';

CREATE FUNCTION concord.seen(OUT origin_node name, OUT commit_time timestamptz,
        OUT receives boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_seen'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.seen() IS
    'causality: per origin node, the commit time of its latest transaction applied here; NULL for a node this node receives from but has applied nothing of yet (all: a subscription forwards every origin); receives: whether this node receives its changes now';

CREATE FUNCTION concord.subscription_status_internal(
        OUT subscription_name name, OUT provider_node name, OUT status text,
        OUT slot_name name, OUT received_lsn pg_lsn, OUT applied_lsn pg_lsn,
        OUT lag_bytes bigint, OUT lag interval,
        OUT last_error text, OUT last_error_at timestamptz,
        OUT last_msg_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_subscription_status'
LANGUAGE C STABLE;

CREATE VIEW concord.subscription_status AS
    SELECT * FROM concord.subscription_status_internal();
COMMENT ON VIEW concord.subscription_status IS
    'state, progress, lag and last error of every subscription of this node';
REVOKE ALL ON concord.subscription_status FROM PUBLIC;

-- Apply lag (src/api/lag_api.c): percentiles per subscription over the
-- last five minutes, and per origin node how far behind it is now.
CREATE FUNCTION concord.subscription_lag_internal(
        OUT subscription_name name, OUT transactions bigint,
        OUT p50 interval, OUT p90 interval, OUT p99 interval, OUT max interval)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_subscription_lag'
LANGUAGE C STABLE;
COMMENT ON FUNCTION concord.subscription_lag_internal() IS
    'the rows of the view concord.subscription_lag';

CREATE VIEW concord.subscription_lag AS
    SELECT * FROM concord.subscription_lag_internal();
COMMENT ON VIEW concord.subscription_lag IS
    'per subscription, the transactions applied in the last five minutes and the lag (local commit minus provider commit time) under which 50, 90 and 99 % of them were applied, and the largest';
REVOKE ALL ON concord.subscription_lag FROM PUBLIC;

CREATE FUNCTION concord.replication_lag_internal(
        OUT origin_node name, OUT last_commit_ts timestamptz,
        OUT caught_up boolean, OUT lag interval)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_replication_lag'
LANGUAGE C STABLE;
COMMENT ON FUNCTION concord.replication_lag_internal() IS
    'the rows of the view concord.replication_lag';

CREATE VIEW concord.replication_lag AS
    SELECT * FROM concord.replication_lag_internal();
COMMENT ON VIEW concord.replication_lag IS
    'per origin node: the commit time of its latest transaction applied here, whether every subscription bringing its changes is caught up, and how far behind this node is';
REVOKE ALL ON concord.replication_lag FROM PUBLIC;

-- The subscriptions of other nodes that stream from this node (this node
-- as their provider), one row per slot: what pg_stat_replication says of
-- each WAL sender, with the subscriber node (from the slot's name) and
-- whether commits here wait for it (sync_state).  A subscription that is
-- not streaming has only its slot (state 'inactive'); the columns of
-- pg_stat_replication are NULL without pg_read_all_stats, as there.
CREATE VIEW concord.subscriber_status AS
    SELECT r.application_name AS subscription_name,
           n.node_name AS subscriber_node,
           s.slot_name,
           CASE WHEN s.active THEN r.state ELSE 'inactive' END AS state,
           r.sent_lsn, r.write_lsn, r.flush_lsn, r.replay_lsn,
           r.write_lag, r.flush_lag, r.replay_lag,
           r.sync_priority, r.sync_state
      FROM pg_catalog.pg_replication_slots s
      LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
      LEFT JOIN concord.node n
        ON n.node_id::text = pg_catalog.split_part(s.slot_name::text, '_', 2)
     WHERE s.plugin = 'concord' AND s.database = pg_catalog.current_database()
       AND s.slot_name::text ~ '^concord_[0-9]+_[0-9]+$';
COMMENT ON VIEW concord.subscriber_status IS
    'the subscriptions of other nodes that stream from this node: positions, lag and synchronous state of their WAL senders';
REVOKE ALL ON concord.subscriber_status FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Conflicts
-- ---------------------------------------------------------------------

CREATE FUNCTION concord.set_conflict_resolver(relation regclass,
        resolver text,
        handler regprocedure DEFAULT NULL,
        conflict_type text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'concord_set_conflict_resolver'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.set_conflict_resolver(regclass, text, regprocedure, text) IS
    'choose the conflict resolver of a table (NULL: of every table), optionally for one conflict type; resolver NULL removes the setting';

CREATE VIEW concord.conflict_stats AS
    SELECT relation, conflict_type, resolution, count(*) AS conflicts,
           max(detected_at) AS last_detected_at
      FROM concord.conflict_history
     GROUP BY relation, conflict_type, resolution;
COMMENT ON VIEW concord.conflict_stats IS
    'how many conflicts of each type were resolved how, per table';
REVOKE ALL ON concord.conflict_stats FROM PUBLIC;

CREATE FUNCTION concord.tombstone_gc()
RETURNS bigint
AS 'MODULE_PATHNAME', 'concord_tombstone_gc_sql'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION concord.tombstone_gc() IS
    'removes now the tombstones every peer has confirmed (and those past concord.tombstone_retention); returns how many';

-- The version a row holds, as the conflict rules see it, from the row's
-- xmin: when the transaction that wrote it committed, and on which node it
-- was first written.  NULLs when the commit timestamp is no longer known.
CREATE FUNCTION concord.row_version(xmin xid,
        OUT commit_time timestamptz, OUT origin_node name)
RETURNS record
AS 'MODULE_PATHNAME', 'concord_row_version'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION concord.row_version(xid) IS
    'the version of a row from its xmin: commit time and origin node, as conflict detection sees them';

-- Anti-entropy, the part each node runs (issue 13): a table's rows as
-- digests by bucket of key hash, and the rows of some buckets, under
-- pinned settings so that equal rows give equal digests on every node
-- (src/antientropy/digest.c).  fences maps node names to fence times
-- (concord.fence()); a row whose version is older than its origin's fence
-- has settled, any other is in flight; NULL: every row counts as settled.
CREATE FUNCTION concord.table_digest(relation regclass, fences jsonb DEFAULT NULL,
        buckets integer DEFAULT 4096,
        OUT bucket integer, OUT row_count bigint, OUT digest text,
        OUT in_flight bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_table_digest'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex' SET lc_monetary = 'C'
SET row_security = off;
COMMENT ON FUNCTION concord.table_digest(regclass, jsonb, integer) IS
    'anti-entropy: per bucket of key hash, the number and XOR digest of the settled rows, and the number in flight';

CREATE FUNCTION concord.table_digest_rows(relation regclass, fences jsonb DEFAULT NULL,
        buckets integer DEFAULT 4096, only_buckets integer[] DEFAULT NULL,
        OUT bucket integer, OUT key jsonb, OUT digest text,
        OUT commit_time timestamptz, OUT origin_node name, OUT settled boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_table_digest_rows'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex' SET lc_monetary = 'C'
SET row_security = off;
COMMENT ON FUNCTION concord.table_digest_rows(regclass, jsonb, integer, integer[]) IS
    'anti-entropy: the key, digest and version of each row of the buckets asked for';

-- The same reads in steps, each a statement of its own (no snapshot
-- lasts longer than a step; a diff pauses between steps): from_block 0
-- begins a read of the session, each step returns the block the next
-- one starts at, NULL at the end; then one of the two results, which
-- ends the read.  With only_buckets the rows of those buckets are listed,
-- else the buckets summed.
CREATE FUNCTION concord.table_digest_step(relation regclass, fences jsonb,
        buckets integer, only_buckets integer[], from_block bigint,
        max_rows bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'concord_table_digest_step'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex' SET lc_monetary = 'C'
SET row_security = off;
COMMENT ON FUNCTION concord.table_digest_step(regclass, jsonb, integer, integer[], bigint, bigint) IS
    'anti-entropy: reads about max_rows rows of a table from from_block on, for a digest in steps; returns where the next step starts';

CREATE FUNCTION concord.table_digest_step_buckets(
        OUT bucket integer, OUT row_count bigint, OUT digest text,
        OUT in_flight bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_table_digest_step_buckets'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.table_digest_step_buckets() IS
    'anti-entropy: the result of a digest in steps without only_buckets, as concord.table_digest() gives it';

CREATE FUNCTION concord.table_digest_step_rows(
        OUT bucket integer, OUT key jsonb, OUT digest text,
        OUT commit_time timestamptz, OUT origin_node name, OUT settled boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_table_digest_step_rows'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.table_digest_step_rows() IS
    'anti-entropy: the result of a digest in steps with only_buckets, as concord.table_digest_rows() gives it';

-- A table's key as anti-entropy and tombstones see it: the key columns
-- (not INCLUDE ones) of its replica identity index, else of its primary
-- key, in the index's order.
CREATE FUNCTION concord.key_columns(relation regclass)
RETURNS name[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cols name[];
BEGIN
    SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)
      INTO cols
      FROM (SELECT i.indkey, i.indnkeyatts FROM pg_catalog.pg_index i
             WHERE i.indrelid = relation AND (i.indisreplident OR i.indisprimary)
             ORDER BY i.indisreplident DESC LIMIT 1) i
     CROSS JOIN LATERAL pg_catalog.unnest((i.indkey::int2[])[0:i.indnkeyatts - 1])
           WITH ORDINALITY k(attnum, ord)
      JOIN pg_catalog.pg_attribute a
        ON a.attrelid = relation AND a.attnum = k.attnum;
    IF cols IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key and no replica identity index', relation
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rows are compared by key: give the table a primary key.';
    END IF;
    RETURN cols;
END $$;
COMMENT ON FUNCTION concord.key_columns(regclass) IS
    'internal: the key columns of a table (replica identity index, else primary key), in index order';

-- The rows of some keys, for the confirmation of a diff: per key (in the
-- order given), the row and its digest and version, or, for a key with no
-- row, the version of its tombstone (deleted) if there is one; settled as
-- in concord.table_digest().  keys: a JSON array of keys as
-- concord.table_digest_rows() returns them.
CREATE FUNCTION concord.table_digest_keys(relation regclass, fences jsonb, keys jsonb,
        OUT key jsonb, OUT row_data jsonb, OUT digest text,
        OUT commit_time timestamptz, OUT origin_node name,
        OUT settled boolean, OUT deleted boolean)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex' SET lc_monetary = 'C'
SET row_security = off
AS $$
DECLARE
    cols name[] := concord.key_columns(relation);
    matches text;
    tombkey text;
BEGIN
    IF keys IS NULL OR pg_catalog.jsonb_typeof(keys) <> 'array'
       OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(keys) e
                   WHERE pg_catalog.jsonb_typeof(e) <> 'object') THEN
        RAISE EXCEPTION 'keys must be a JSON array of key objects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fences IS NOT NULL AND pg_catalog.jsonb_typeof(fences) <> 'object' THEN
        RAISE EXCEPTION 'fences must be a JSON object of node names to fence times'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fences IS NOT NULL AND NOT pg_catalog.current_setting('track_commit_timestamp')::boolean THEN
        RAISE EXCEPTION 'rows cannot be told settled with track_commit_timestamp off'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.format('t.%I = p.%I', c, c), ' AND '),
           'ARRAY[' || pg_catalog.string_agg(pg_catalog.format('pg_catalog.format(''%%s'', p.%I)', c), ', ' ORDER BY o) || ']'
      INTO matches, tombkey
      FROM pg_catalog.unnest(cols) WITH ORDINALITY u(c, o);
    RETURN QUERY EXECUTE pg_catalog.format($q$
        SELECT k.key, r.row_data,
               pg_catalog.md5(pg_catalog.convert_to(r.row_data::text, 'UTF8')),
               coalesce(r.commit_time, d.commit_time),
               coalesce(r.origin_node, d.origin_node),
               ($1 IS NULL OR coalesce(r.commit_time, d.commit_time) IS NULL
                OR coalesce(r.commit_time, d.commit_time) <= '2000-01-01 00:00:00.000001+00'
                OR coalesce(r.commit_time, d.commit_time)
                   < coalesce(f.fence,
                              CASE WHEN n.node_name IS NULL OR dn.node_name IS NOT NULL
                                   THEN fmin.fence END,
                              '-infinity')),
               r.row_data IS NULL AND d.found IS NOT NULL
          FROM pg_catalog.jsonb_array_elements($2) WITH ORDINALITY k(key, ord)
         CROSS JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::%1$s, k.key) p
          LEFT JOIN LATERAL (
                SELECT pg_catalog.to_jsonb(t.*) AS row_data, v.commit_time, v.origin_node
                  FROM %1$s t CROSS JOIN LATERAL concord.row_version(t.xmin) v
                 WHERE %2$s) r ON true
          LEFT JOIN LATERAL (
                SELECT true AS found, v.commit_time, v.origin_node
                  FROM concord.tombstone ts
                 CROSS JOIN LATERAL concord.row_version(ts.xmin) v
                 WHERE ts.relid IN (SELECT %3$s UNION ALL
                                    SELECT pt.relid FROM pg_catalog.pg_partition_tree(%3$s::pg_catalog.regclass) pt)
                   AND ts.key = %4$s
                 ORDER BY v.commit_time DESC NULLS LAST LIMIT 1) d ON r.row_data IS NULL
          LEFT JOIN (SELECT e.key AS node, e.value::timestamptz AS fence
                       FROM pg_catalog.jsonb_each_text($1) e) f
            ON f.node = coalesce(r.origin_node, d.origin_node)::text
          LEFT JOIN (SELECT pg_catalog.min(e.value::timestamptz) AS fence
                       FROM pg_catalog.jsonb_each_text($1) e) fmin ON true
          LEFT JOIN concord.node n ON n.node_name = coalesce(r.origin_node, d.origin_node)
          LEFT JOIN concord.departed_node dn
            ON dn.node_name = coalesce(r.origin_node, d.origin_node)
         ORDER BY k.ord$q$,
        relation, matches, relation::oid, tombkey)
        USING fences, keys;
END $$;
COMMENT ON FUNCTION concord.table_digest_keys(regclass, jsonb, jsonb) IS
    'anti-entropy: the row, digest and version of each key asked for (or its tombstone''s version)';

-- Anti-entropy runs (concord.table_diff): one row per run, and one per key
-- that differs.  Not for PUBLIC: they hold rows of any table.
CREATE TABLE concord.diff_run (
    run_id              bigint      NOT NULL PRIMARY KEY,
    relation            text        NOT NULL,
    relid               oid         NOT NULL,
    nodes               name[]      NOT NULL,
    status              text        NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'clean', 'divergent', 'failed')),
    started_at          timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at         timestamptz,
    seconds             double precision,
    timeout             interval    NOT NULL,
    buckets             integer     NOT NULL,
    rows_settled        bigint,
    in_flight           bigint,
    buckets_differing   integer,
    keys_compared       bigint,
    keys_in_flight      bigint,
    differences         bigint,
    bytes_received      bigint,
    fences              jsonb,
    confirm_fences      jsonb,
    error               text,
    worker_pid          integer,
    started_by          oid         NOT NULL
);
CREATE SEQUENCE concord.diff_run_id_seq;
COMMENT ON TABLE concord.diff_run IS
    'anti-entropy: one row per concord.table_diff() run, its status and counts';

CREATE TABLE concord.diff_row (
    run_id      bigint  NOT NULL REFERENCES concord.diff_run ON DELETE CASCADE,
    relation    text    NOT NULL,
    key         jsonb   NOT NULL,
    kind        text    NOT NULL CHECK (kind IN ('missing', 'extra', 'differs')),
    rows        jsonb   NOT NULL,
    PRIMARY KEY (run_id, key)
);
COMMENT ON TABLE concord.diff_row IS
    'anti-entropy: per run, each key whose settled rows differ between nodes, with every node''s row and version';
REVOKE ALL ON concord.diff_run, concord.diff_row, concord.diff_run_id_seq FROM PUBLIC;

CREATE FUNCTION concord.table_diff(relation regclass, peers name[] DEFAULT NULL,
        timeout interval DEFAULT '10min')
RETURNS bigint
AS 'MODULE_PATHNAME', 'concord_table_diff'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.table_diff(regclass, name[], interval) IS
    'anti-entropy: compares the table on this node and its peers in a background worker; returns the run id (concord.diff_run)';

CREATE FUNCTION concord.wait_for_diff(run_id bigint, timeout interval DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'concord_wait_for_diff'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.wait_for_diff(bigint, interval) IS
    'anti-entropy: waits until a diff run ended (or the timeout passed) and returns its status';

-- Repairs (concord.table_repair): one row per key and node a repair
-- planned or tried.  Written on the node it repaired, in the transaction
-- of the repair; a dry run's plan on the node that ran it.
CREATE TABLE concord.repair_history (
    repair_id   bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_id      bigint,
    coordinator name        NOT NULL,
    subscription_name name,
    node_name   name        NOT NULL,
    relation    text        NOT NULL,
    key         jsonb       NOT NULL,
    action      text        NOT NULL
                CHECK (action IN ('insert', 'update', 'delete', 'already', 'stale')),
    origin_node name,
    commit_time timestamptz,
    dry_run     boolean     NOT NULL DEFAULT false,
    repaired_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX repair_history_run ON concord.repair_history (coordinator, run_id);
COMMENT ON TABLE concord.repair_history IS
    'anti-entropy: per key and node, what concord.table_repair() (run_id) or the resynchronization of a table (subscription_name) wrote (insert, update, delete), found done (already) or left to a newer write (stale); a dry run''s plan';
REVOKE ALL ON concord.repair_history FROM PUBLIC;

CREATE FUNCTION concord.table_repair(run_id bigint, source_node name DEFAULT NULL,
        dry_run boolean DEFAULT false)
RETURNS bigint
AS 'MODULE_PATHNAME', 'concord_table_repair'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.table_repair(bigint, name, boolean) IS
    'anti-entropy: writes the winner of each key of a divergent diff run on the nodes that lack it, with its origin and commit time; returns how many row writes it sent';

-- The part of a repair each node runs, in a transaction of its own: locks
-- the key, writes the winner unless the node's version changed since the
-- diff (expected), under the winner's origin and commit time.
CREATE FUNCTION concord.repair_row(relation text, key jsonb, expected jsonb,
        winner jsonb, run_id bigint, coordinator name,
        subscription_name name DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'concord_repair_row'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.repair_row(text, jsonb, jsonb, jsonb, bigint, name, name) IS
    'anti-entropy: one key of a repair on this node (called by concord.table_repair() over libpq, and by a resynchronization with subscription_name); returns what it did';

-- Recoveries of subscriptions (concord.alter_subscription_repair): one
-- row per call, written by its worker.
CREATE TABLE concord.subscription_repair (
    repair_id   bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    sub_name    name        NOT NULL,
    status      text        NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'done', 'failed')),
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    slot_lsn    pg_lsn,
    run_ids     bigint[]    NOT NULL DEFAULT '{}',
    skipped     text[]      NOT NULL DEFAULT '{}',
    rows_sent   bigint      NOT NULL DEFAULT 0,
    error       text,
    worker_pid  integer     NOT NULL,
    started_by  oid         NOT NULL
);
COMMENT ON TABLE concord.subscription_repair IS
    'anti-entropy: one row per concord.alter_subscription_repair() call: the new slot''s start, the diff runs of its tables, the row writes their repair sent';
REVOKE ALL ON concord.subscription_repair FROM PUBLIC;

CREATE FUNCTION concord.alter_subscription_repair(subscription_name name)
RETURNS bigint
AS 'MODULE_PATHNAME', 'concord_alter_subscription_repair'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.alter_subscription_repair(name) IS
    'anti-entropy: recovers a subscription whose slot is lost: a new slot from the provider''s current position, then every table of the subscription compared with the provider and repaired; returns the row writes the repairs sent';

-- Re-applies a remote change that a conflict left unapplied (resolution
-- skip or keep_local), as a new local write of this node: it replicates
-- to the other nodes like any write, with the current commit timestamp.
CREATE FUNCTION concord.conflict_reapply(conflict_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h       concord.conflict_history;
    rel     regclass;
    keys    text;
    sets    text;
    cols    text;
    unsent  text;
    unsent_keys text[];
    n       bigint;
BEGIN
    SELECT * INTO h FROM concord.conflict_history c
     WHERE c.conflict_id = conflict_reapply.conflict_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conflict % does not exist', conflict_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'See concord.conflict_history for the conflicts of this node.';
    END IF;
    IF h.resolution NOT IN ('skip', 'keep_local') THEN
        RAISE EXCEPTION 'the change of conflict % was applied (resolution %)',
                        conflict_id, h.resolution
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Only a change resolved as skip or keep_local can be re-applied.';
    END IF;
    IF h.reapplied_at IS NOT NULL THEN
        RAISE EXCEPTION 'the change of conflict % was already re-applied', conflict_id
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It was re-applied at %s.', h.reapplied_at);
    END IF;
    rel := pg_catalog.to_regclass(h.relation);
    IF rel IS NULL OR h.key IS NULL OR h.remote_row IS NULL THEN
        RAISE EXCEPTION 'the change of conflict % cannot be re-applied', conflict_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN rel IS NULL
                                THEN format('Relation %s does not exist.', h.relation)
                                ELSE 'The history row has no key or no remote row.' END;
    END IF;
    SELECT string_agg(format('t.%1$I IS NOT DISTINCT FROM r.%1$I', k), ' AND ')
      INTO keys FROM pg_catalog.jsonb_object_keys(h.key) k;

    IF h.conflict_type IN ('delete_origin_differs', 'delete_missing') THEN
        EXECUTE format('DELETE FROM %s t USING pg_catalog.jsonb_populate_record(NULL::%s, $1) r WHERE %s',
                       rel, rel, keys) USING h.remote_row;
        GET DIAGNOSTICS n = ROW_COUNT;
        UPDATE concord.conflict_history c SET reapplied_at = pg_catalog.now()
         WHERE c.conflict_id = conflict_reapply.conflict_id;
        RETURN CASE WHEN n > 0 THEN 'deleted' ELSE 'nothing to delete' END;
    END IF;

    -- the columns the remote row carries, the key included; a value the
    -- remote UPDATE left unchanged and did not send (the marker
    -- {"concord_unchanged": true}) stays as it is here
    SELECT string_agg(format('%1$I = r.%1$I', c.attname), ', ') FILTER (WHERE NOT c.unsent),
           string_agg(format('%I', c.attname), ', '),
           string_agg(format('%I', c.attname), ', ') FILTER (WHERE c.unsent),
           COALESCE(array_agg(c.attname::text) FILTER (WHERE c.unsent), '{}')
      INTO sets, cols, unsent, unsent_keys
      FROM (SELECT a.attname,
                   h.remote_row -> a.attname OPERATOR(pg_catalog.=) '{"concord_unchanged": true}'::jsonb AS unsent
              FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = '' AND h.remote_row ? a.attname) c;
    -- (the marker is no value of the column's type)
    EXECUTE format('UPDATE %s t SET %s FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r WHERE %s',
                   rel, sets, rel, keys) USING h.remote_row OPERATOR(pg_catalog.-) unsent_keys;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 AND unsent IS NOT NULL THEN
        RAISE EXCEPTION 'the change of conflict % cannot be re-applied', conflict_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The row is not here, and the remote row lacks the value of %s: the remote UPDATE left it unchanged and the provider did not send it.', unsent),
                  HINT = 'Insert the row by hand, with the value of that column from the node that wrote it.';
    END IF;
    IF n = 0 THEN
        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r',
                       rel, cols, cols, rel) USING h.remote_row;
    END IF;
    UPDATE concord.conflict_history c SET reapplied_at = pg_catalog.now()
     WHERE c.conflict_id = conflict_reapply.conflict_id;
    RETURN CASE WHEN n > 0 THEN 'updated' ELSE 'inserted' END;
END
$$;
COMMENT ON FUNCTION concord.conflict_reapply(bigint) IS
    'applies now, as a local write that replicates, the remote change a conflict left unapplied (skip or keep_local)';

CREATE FUNCTION concord.tombstone_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'concord_tombstone_trigger'
LANGUAGE C;
COMMENT ON FUNCTION concord.tombstone_trigger() IS
    'records a tombstone for each row deleted locally from a replicated table';

-- ---------------------------------------------------------------------
-- Protocol
-- ---------------------------------------------------------------------

CREATE FUNCTION concord.protocol_describe(message bytea, proto_version int DEFAULT 1)
RETURNS text
AS 'MODULE_PATHNAME', 'concord_protocol_describe'
LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION concord.protocol_describe(bytea, int) IS
    'what the concord output plugin wrote in one CopyData message, as text, a line per protocol message (for debugging)';

-- ---------------------------------------------------------------------
-- Housekeeping: a dropped table leaves no rows behind in the set catalog.
-- ---------------------------------------------------------------------

CREATE FUNCTION concord.on_sql_drop()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'concord_on_sql_drop'
LANGUAGE C;
COMMENT ON FUNCTION concord.on_sql_drop() IS
    'event trigger: removes dropped tables from replication sets';

CREATE EVENT TRIGGER concord_on_sql_drop ON sql_drop
    EXECUTE FUNCTION concord.on_sql_drop();

CREATE FUNCTION concord.on_alter_table()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'concord_on_alter_table'
LANGUAGE C;
COMMENT ON FUNCTION concord.on_alter_table() IS
    'event trigger: refuses an ALTER TABLE that breaks a row filter (a column it uses dropped or retyped)';

CREATE EVENT TRIGGER concord_on_alter_table ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION concord.on_alter_table();

CREATE FUNCTION concord.on_drop_extension()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'concord_on_drop_extension'
LANGUAGE C;
COMMENT ON FUNCTION concord.on_drop_extension() IS
    'event trigger: refuses DROP EXTENSION concord while subscriptions exist';

CREATE EVENT TRIGGER concord_on_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION concord.on_drop_extension();

-- ---------------------------------------------------------------------
-- What each column means (\d+ shows it), and the status function
-- ---------------------------------------------------------------------

COMMENT ON COLUMN concord.node.node_id IS 'derived from a hash of node_name: the same on every node';
COMMENT ON COLUMN concord.node.node_name IS 'unique among the nodes connected together';
COMMENT ON COLUMN concord.node.dsn IS 'libpq connection string that reaches the node (may hold a password)';
COMMENT ON COLUMN concord.node.priority IS 'for the replica_priority resolver: higher wins';
COMMENT ON COLUMN concord.node.is_local IS 'true for the node this database is';

COMMENT ON COLUMN concord.replication_set.capture IS 'how changes are captured: logical (logical decoding)';
COMMENT ON COLUMN concord.replication_set.replicate_insert IS 'ship INSERT';
COMMENT ON COLUMN concord.replication_set.replicate_update IS 'ship UPDATE';
COMMENT ON COLUMN concord.replication_set.replicate_delete IS 'ship DELETE';
COMMENT ON COLUMN concord.replication_set.replicate_truncate IS 'ship TRUNCATE';

COMMENT ON COLUMN concord.replication_set_table.set_reloid IS 'the table';
COMMENT ON COLUMN concord.replication_set_table.column_list IS 'shipped columns; NULL: all';
COMMENT ON COLUMN concord.replication_set_table.row_filter IS 'boolean expression on the row, deparsed from row_filter_expr (renamed columns followed); NULL: every row';
COMMENT ON COLUMN concord.replication_set_table.row_filter_expr IS 'the row filter analysed (nodeToString), as the provider runs it; internal';

COMMENT ON COLUMN concord.subscription.sub_id IS 'derived from a hash of sub_name';
COMMENT ON COLUMN concord.subscription.provider_node_id IS 'the provider (concord.node.node_id)';
COMMENT ON COLUMN concord.subscription.provider_dsn IS 'connection string to the provider (may hold a password)';
COMMENT ON COLUMN concord.subscription.slot_name IS 'the logical replication slot on the provider';
COMMENT ON COLUMN concord.subscription.replication_sets IS 'the provider''s sets received';
COMMENT ON COLUMN concord.subscription.forward_origins IS '{}: the provider''s own changes; {all}: also those it received; or origin node names';
COMMENT ON COLUMN concord.subscription.synchronize_data IS 'copy the existing rows first';
COMMENT ON COLUMN concord.subscription.apply_delay IS 'apply each transaction this long after its provider commit time';
COMMENT ON COLUMN concord.subscription.enabled IS 'false after alter_subscription_disable';
COMMENT ON COLUMN concord.subscription.sync_done IS 'the initial copy is done';
COMMENT ON COLUMN concord.subscription.password_required IS 'every connection with provider_dsn must use its password (created by a role that is not a superuser)';
COMMENT ON COLUMN concord.subscription.join_copy_via IS 'made by join_mesh: the subscription (sub_id) whose copy brings this provider''s older changes; apply waits for that copy (NULL: none, or done)';
COMMENT ON COLUMN concord.subscription.join_start_lsn IS 'made by join_mesh: the provider position the copy covers; apply starts there';

COMMENT ON COLUMN concord.subscription_table.sync_lsn IS 'provider position of the copy''s snapshot; NULL: a copy is pending';

COMMENT ON COLUMN concord.conflict_resolver.set_reloid IS 'the table; 0: every table';
COMMENT ON COLUMN concord.conflict_resolver.conflict_type IS 'the conflict type; empty: every type';
COMMENT ON COLUMN concord.conflict_resolver.handler IS 'the handler of the custom resolver';

COMMENT ON COLUMN concord.conflict_history.relation IS 'the table, schema-qualified, as the provider named it';
COMMENT ON COLUMN concord.conflict_history.resolver IS 'the resolver that decided';
COMMENT ON COLUMN concord.conflict_history.resolution IS 'apply_remote, keep_local, handler_row or skip';
COMMENT ON COLUMN concord.conflict_history.key IS 'the columns that identify the row, as a JSON object (under REPLICA IDENTITY FULL, those of the primary key or a unique index)';
COMMENT ON COLUMN concord.conflict_history.local_row IS 'the local row before the resolution; NULL when missing';
COMMENT ON COLUMN concord.conflict_history.local_origin IS 'the node where the local version was written';
COMMENT ON COLUMN concord.conflict_history.local_commit_ts IS 'its commit timestamp; NULL when missing or unknown';
COMMENT ON COLUMN concord.conflict_history.remote_row IS 'the remote change''s row (for a DELETE, its old row as sent); {"concord_unchanged": true} for a large value an UPDATE left unchanged and this node did not read';
COMMENT ON COLUMN concord.conflict_history.remote_origin IS 'the node where the remote change was written';
COMMENT ON COLUMN concord.conflict_history.remote_commit_ts IS 'its commit timestamp there';
COMMENT ON COLUMN concord.conflict_history.remote_lsn IS 'the provider''s commit LSN of the remote transaction';
COMMENT ON COLUMN concord.conflict_history.resolved_row IS 'the row after the resolution; NULL when none remains';
COMMENT ON COLUMN concord.conflict_history.error_message IS 'why a handler failed, or why the remote change was not applied as it came (resolution skip, or a change applied as the newer version)';
COMMENT ON COLUMN concord.conflict_history.reapplied_at IS 'when concord.conflict_reapply() applied the change';

COMMENT ON COLUMN concord.tombstone.relid IS 'the table (for a partitioned table, the partition)';
COMMENT ON COLUMN concord.tombstone.key IS 'text form of the key columns, made with fixed output settings';

COMMENT ON COLUMN concord.tombstone_gap.peer IS 'the node whose older transactions are refused';
COMMENT ON COLUMN concord.tombstone_gap.origin IS 'the node whose deletions they had not applied';
COMMENT ON COLUMN concord.tombstone_gap.removed_upto IS 'commit timestamp of the newest such tombstone removed';

COMMENT ON COLUMN concord.node_identity.system_identifier IS 'the system identifier of the server the node was created on';
COMMENT ON COLUMN concord.node_identity.database_oid IS 'the OID of its database there';
COMMENT ON COLUMN concord.node_identity.marker_slot IS 'a physical slot of that server, reserving no WAL, that copies of the server lack';

COMMENT ON FUNCTION concord.subscription_status_internal() IS
    'the rows of the view concord.subscription_status';

-- ---------------------------------------------------------------------
-- Joining and leaving a live mesh (src/api/mesh_api.c)
-- ---------------------------------------------------------------------

CREATE FUNCTION concord.join_mesh(peer_dsn text,
        replication_sets text[] DEFAULT '{default}',
        timeout interval DEFAULT '1h')
RETURNS integer
AS 'MODULE_PATHNAME', 'concord_join_mesh'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.join_mesh(text, text[], interval) IS
    'on a new node: copy from the peer, subscribe to every node of its mesh and make each subscribe here; returns the subscriptions made';

CREATE FUNCTION concord.part_mesh(timeout interval DEFAULT '10min')
RETURNS integer
AS 'MODULE_PATHNAME', 'concord_part_mesh'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.part_mesh(interval) IS
    'on a leaving node: wait until its changes reached every peer, then drop every subscription to and from it; returns the subscriptions dropped';

CREATE FUNCTION concord.drop_peer(node_name name)
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_drop_peer'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.drop_peer(name) IS
    'forget a node that is gone for good: its subscriptions here, the slots it used here, its node row';

CREATE FUNCTION concord.join_fence(nodes text[], positions pg_lsn[],
        timeout interval DEFAULT '60s',
        OUT node_name name, OUT applied_lsn pg_lsn, OUT seen timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_join_fence'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.join_fence(text[], pg_lsn[], interval) IS
    'internal, called by a joining node''s copy: waits until this node applied each node up to its position, then holds every apply commit to the end of the transaction and says what was applied';

-- ---------------------------------------------------------------------
-- Privileges: configuration is for superusers and those they grant it to.
-- ---------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA concord FROM PUBLIC;
