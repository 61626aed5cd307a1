/*
 * concord 0.2.0 -> 0.3.0
 *
 * concord.subscription_status gains last_msg_at: when the subscription's
 * stream last delivered a message.  Its function's result changes, so the
 * view and the function are made again; the privileges granted on them
 * (a monitoring role's, say) are granted again as they were.
 *
 * Node identity: concord.node_identity, concord.node_status and
 * concord.reclaim_node_identity(); the local node, if there is one, is
 * recorded as this database of this server.
 *
 * concord.origin_history (which node each replication origin id stood for)
 * and concord.row_version(); the origins of this database's subscriptions
 * are recorded as they are.
 *
 * concord.subscriber_status: the subscriptions streaming from this node.
 *
 * The lag views concord.subscription_lag and concord.replication_lag.
 *
 * Joining and leaving a live mesh: concord.join_mesh(), part_mesh(),
 * drop_peer() and join_fence(), two columns of concord.subscription and
 * concord.departed_node.
 *
 * Anti-entropy: concord.fence(), the per-node digests
 * (concord.table_digest(), table_digest_rows(), table_digest_keys()) and
 * concord.table_diff() / wait_for_diff() with their results in
 * concord.diff_run and concord.diff_row; concord.table_repair() and
 * concord.repair_row() with their record in concord.repair_history;
 * concord.alter_subscription_repair() with concord.subscription_repair.
 */

\echo Use "ALTER EXTENSION concord UPDATE TO '0.3.0'" to load this file. \quit

CREATE TEMPORARY TABLE concord_saved_grants ON COMMIT DROP AS
    SELECT 'TABLE concord.subscription_status' AS object, a.privilege_type,
           a.grantee, a.is_grantable
      FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
     WHERE c.oid = 'concord.subscription_status'::pg_catalog.regclass
       AND a.grantee <> c.relowner
    UNION ALL
    SELECT 'FUNCTION concord.subscription_status_internal()', a.privilege_type,
           a.grantee, a.is_grantable
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
     WHERE p.oid = 'concord.subscription_status_internal()'::pg_catalog.regprocedure
       AND a.grantee <> p.proowner;

DROP VIEW concord.subscription_status;
DROP FUNCTION concord.subscription_status_internal();

CREATE FUNCTION concord.subscription_status_internal(
        OUT subscription_name name, OUT provider_node name, OUT status text,
        OUT slot_name name, OUT received_lsn pg_lsn, OUT applied_lsn pg_lsn,
        OUT lag_bytes bigint, OUT lag interval,
        OUT last_error text, OUT last_error_at timestamptz,
        OUT last_msg_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_subscription_status'
LANGUAGE C STABLE;
COMMENT ON FUNCTION concord.subscription_status_internal() IS
    'the rows of the view concord.subscription_status';
REVOKE ALL ON FUNCTION concord.subscription_status_internal() FROM PUBLIC;

CREATE VIEW concord.subscription_status AS
    SELECT * FROM concord.subscription_status_internal();
COMMENT ON VIEW concord.subscription_status IS
    'state, progress, lag and last error of every subscription of this node';
REVOKE ALL ON concord.subscription_status FROM PUBLIC;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM concord_saved_grants LOOP
        EXECUTE pg_catalog.format('GRANT %s ON %s TO %s%s', g.privilege_type, g.object,
                                  CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;
DROP TABLE concord_saved_grants;

-- ---------------------------------------------------------------------
-- Node identity
-- ---------------------------------------------------------------------

CREATE TABLE concord.node_identity (
    system_identifier   text        NOT NULL,
    database_oid        oid         NOT NULL PRIMARY KEY,
    marker_slot         name        NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
) WITH (user_catalog_table = true);
COMMENT ON TABLE concord.node_identity IS
    'the server (system identifier), database and marker slot of the local node; a copy of the node differs';
COMMENT ON COLUMN concord.node_identity.system_identifier IS 'the system identifier of the server the node was created on';
COMMENT ON COLUMN concord.node_identity.database_oid IS 'the OID of its database there';
COMMENT ON COLUMN concord.node_identity.marker_slot IS 'a physical slot of that server, reserving no WAL, that copies of the server lack';
REVOKE ALL ON concord.node_identity FROM PUBLIC;

CREATE FUNCTION concord.reclaim_node_identity()
RETURNS boolean
AS 'MODULE_PATHNAME', 'concord_reclaim_node_identity'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION concord.reclaim_node_identity() IS
    'records this database of this server as the local node again (after pg_upgrade or a failover); false if it already was';
REVOKE ALL ON FUNCTION concord.reclaim_node_identity() FROM PUBLIC;

CREATE FUNCTION concord.node_status_internal(
        OUT node_name name, OUT identity text, OUT detail text, OUT hint text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'concord_node_status'
LANGUAGE C STABLE;
COMMENT ON FUNCTION concord.node_status_internal() IS
    'the rows of the view concord.node_status';
REVOKE ALL ON FUNCTION concord.node_status_internal() FROM PUBLIC;

CREATE VIEW concord.node_status AS
    SELECT * FROM concord.node_status_internal();
COMMENT ON VIEW concord.node_status IS
    'the local node, and whether this database is that node or a copy of it';
REVOKE ALL ON concord.node_status FROM PUBLIC;

-- A subscription created by a role that is not a superuser connects only
-- with its DSN's password, every time (review #18); the existing ones were
-- created under 0.2.0, by superusers (or under their grants) and keep
-- connecting as before.
ALTER TABLE concord.subscription ADD COLUMN password_required boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN concord.subscription.password_required IS 'every connection with provider_dsn must use its password (created by a role that is not a superuser)';

-- Row filters are stored analysed (review #2): the ones stored as text are
-- analysed again by today's rules (built-in types, operators, functions
-- and collations only); one that fails stops the update, naming it.
ALTER TABLE concord.replication_set_table ADD COLUMN row_filter_expr text;
COMMENT ON COLUMN concord.replication_set_table.row_filter IS 'boolean expression on the row, deparsed from row_filter_expr (renamed columns followed); NULL: every row';
COMMENT ON COLUMN concord.replication_set_table.row_filter_expr IS 'the row filter analysed (nodeToString), as the provider runs it; internal';
CREATE FUNCTION concord.row_filter_upgrade_030()
RETURNS void
AS 'MODULE_PATHNAME', 'concord_row_filter_upgrade'
LANGUAGE C VOLATILE;
SELECT concord.row_filter_upgrade_030();
DROP FUNCTION concord.row_filter_upgrade_030();

-- The database being updated is taken to be its node (a copy of it updated
-- alone would be taken for the node too: update the node itself).
SELECT concord.reclaim_node_identity() FROM concord.node WHERE is_local;


CREATE FUNCTION concord.row_filter_sql(set_id oid, relation regclass)
RETURNS text
AS 'MODULE_PATHNAME', 'concord_row_filter_sql'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION concord.row_filter_sql(oid, regclass) IS
    'the row filter of a table in a set, as SQL written under fixed settings (for the initial copy); the provider role needs EXECUTE on it and SELECT on concord.replication_set_table';
REVOKE ALL ON FUNCTION concord.row_filter_sql(oid, regclass) FROM PUBLIC;
-- The roles that may read the sets' tables (providers' roles, for the
-- initial copy) may call it.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole AS grantee
               FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
              WHERE c.oid = 'concord.replication_set_table'::pg_catalog.regclass
                AND a.privilege_type = 'SELECT' AND a.grantee <> 0
                AND a.grantee <> c.relowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION concord.row_filter_sql(oid, regclass) TO %s',
                                  r.grantee);
    END LOOP;
END
$$;

-- An ALTER TABLE that drops or retypes a column a row filter uses is
-- refused: the stored filter could no longer run.
CREATE FUNCTION concord.on_alter_table()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'concord_on_alter_table'
LANGUAGE C;
COMMENT ON FUNCTION concord.on_alter_table() IS
    'event trigger: refuses an ALTER TABLE that breaks a row filter (a column it uses dropped or retyped)';

REVOKE ALL ON FUNCTION concord.on_alter_table() FROM PUBLIC;

CREATE EVENT TRIGGER concord_on_alter_table ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION concord.on_alter_table();

-- conflict_reapply(): a value a remote UPDATE left unchanged and did not
-- send (out of line) is marked {"concord_unchanged": true} in remote_row;
-- re-applying leaves it as it is, and refuses to insert a row without it.
CREATE OR REPLACE FUNCTION concord.conflict_reapply(conflict_id bigint)
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
COMMENT ON COLUMN concord.conflict_history.key IS 'the columns that identify the row, as a JSON object (under REPLICA IDENTITY FULL, those of the primary key or a unique index)';
COMMENT ON COLUMN concord.conflict_history.remote_row IS 'the remote change''s row (for a DELETE, its old row as sent); {"concord_unchanged": true} for a large value an UPDATE left unchanged and this node did not read';
COMMENT ON COLUMN concord.conflict_history.error_message IS 'why a handler failed, or why the remote change was not applied as it came (resolution skip, or a change applied as the newer version)';

-- Which node each replication origin id stood for, from which transaction
-- on (review #8).  The origins of this database's subscriptions are
-- recorded as they are now, from the beginning: what an id stood for
-- before 0.3.0 is not known.
CREATE TABLE concord.origin_history (
    roident     oid     NOT NULL,
    since_xid   xid8    NOT NULL,
    node_name   name    NOT NULL,
    PRIMARY KEY (roident, since_xid)
);
COMMENT ON TABLE concord.origin_history IS
    'the node each replication origin id stood for, from the transaction that created the origin on';
REVOKE ALL ON concord.origin_history FROM PUBLIC;
INSERT INTO concord.origin_history (roident, since_xid, node_name)
SELECT o.roident, '0'::pg_catalog.xid8,
       pg_catalog.substring(o.roname, '^concord_[0-9]+_(.*)$')
  FROM pg_catalog.pg_replication_origin o
 WHERE EXISTS (SELECT FROM concord.subscription s
                WHERE pg_catalog.starts_with(o.roname, 'concord_' || s.sub_id || '_'));

CREATE FUNCTION concord.row_version(xmin xid,
        OUT commit_time timestamptz, OUT origin_node name)
RETURNS record
AS 'MODULE_PATHNAME', 'concord_row_version'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION concord.row_version(xid) IS
    'the version of a row from its xmin: commit time and origin node, as conflict detection sees them';
REVOKE ALL ON FUNCTION concord.row_version(xid) FROM PUBLIC;

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

-- Joining and leaving a live mesh (issue 15): the columns join_mesh
-- fills, the nodes that left, and the functions.
ALTER TABLE concord.subscription ADD COLUMN join_copy_via oid;
ALTER TABLE concord.subscription ADD COLUMN join_start_lsn pg_lsn;
COMMENT ON COLUMN concord.subscription.join_copy_via IS 'made by join_mesh: the subscription (sub_id) whose copy brings this provider''s older changes; apply waits for that copy (NULL: none, or done)';
COMMENT ON COLUMN concord.subscription.join_start_lsn IS 'made by join_mesh: the provider position the copy covers; apply starts there';
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

REVOKE ALL ON concord.departed_node FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('concord.departed_node', '');

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

REVOKE ALL ON FUNCTION concord.join_mesh(text, text[], interval),
    concord.part_mesh(interval), concord.drop_peer(name),
    concord.join_fence(text[], pg_lsn[], interval) FROM PUBLIC;

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
REVOKE ALL ON FUNCTION concord.subscription_lag_internal(),
    concord.replication_lag_internal() FROM PUBLIC;

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

REVOKE ALL ON FUNCTION concord.causal_token(),
    concord.wait_for_token(text, interval), concord.fence(interval), concord.seen() FROM PUBLIC;

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

REVOKE ALL ON FUNCTION concord.table_digest(regclass, jsonb, integer),
    concord.table_digest_rows(regclass, jsonb, integer, integer[]),
    concord.table_digest_step(regclass, jsonb, integer, integer[], bigint, bigint),
    concord.table_digest_step_buckets(),
    concord.table_digest_step_rows(),
    concord.key_columns(regclass),
    concord.table_digest_keys(regclass, jsonb, jsonb),
    concord.table_diff(regclass, name[], interval),
    concord.wait_for_diff(bigint, interval),
    concord.table_repair(bigint, name, boolean),
    concord.repair_row(text, jsonb, jsonb, jsonb, bigint, name, name),
    concord.alter_subscription_repair(name) FROM PUBLIC;
