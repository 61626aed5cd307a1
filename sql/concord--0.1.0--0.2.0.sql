/*
 * concord 0.1.0 -> 0.2.0
 *
 * 0.2.0 changes no catalog and no function: it describes every column of
 * the catalogs and the status function (COMMENT ON), as a fresh 0.2.0
 * install does (test/t/010_upgrade.pl compares the two).
 */

\echo Use "ALTER EXTENSION concord UPDATE TO '0.2.0'" to load this file. \quit

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
COMMENT ON COLUMN concord.replication_set_table.row_filter IS 'boolean expression on the row; NULL: every row';

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

COMMENT ON COLUMN concord.subscription_table.sync_lsn IS 'provider position of the copy''s snapshot; NULL: a copy is pending';

COMMENT ON COLUMN concord.conflict_resolver.set_reloid IS 'the table; 0: every table';
COMMENT ON COLUMN concord.conflict_resolver.conflict_type IS 'the conflict type; empty: every type';
COMMENT ON COLUMN concord.conflict_resolver.handler IS 'the handler of the custom resolver';

COMMENT ON COLUMN concord.conflict_history.relation IS 'the table, schema-qualified, as the provider named it';
COMMENT ON COLUMN concord.conflict_history.resolver IS 'the resolver that decided';
COMMENT ON COLUMN concord.conflict_history.resolution IS 'apply_remote, keep_local, handler_row or skip';
COMMENT ON COLUMN concord.conflict_history.key IS 'the key columns, as a JSON object';
COMMENT ON COLUMN concord.conflict_history.local_row IS 'the local row before the resolution; NULL when missing';
COMMENT ON COLUMN concord.conflict_history.local_origin IS 'the node where the local version was written';
COMMENT ON COLUMN concord.conflict_history.local_commit_ts IS 'its commit timestamp; NULL when missing or unknown';
COMMENT ON COLUMN concord.conflict_history.remote_row IS 'the remote change''s row (for a DELETE, its old row as sent)';
COMMENT ON COLUMN concord.conflict_history.remote_origin IS 'the node where the remote change was written';
COMMENT ON COLUMN concord.conflict_history.remote_commit_ts IS 'its commit timestamp there';
COMMENT ON COLUMN concord.conflict_history.remote_lsn IS 'the provider''s commit LSN of the remote transaction';
COMMENT ON COLUMN concord.conflict_history.resolved_row IS 'the row after the resolution; NULL when none remains';
COMMENT ON COLUMN concord.conflict_history.error_message IS 'why a handler failed (resolution skip)';
COMMENT ON COLUMN concord.conflict_history.reapplied_at IS 'when concord.conflict_reapply() applied the change';

COMMENT ON COLUMN concord.tombstone.relid IS 'the table (for a partitioned table, the partition)';
COMMENT ON COLUMN concord.tombstone.key IS 'text form of the key columns, made with fixed output settings';

COMMENT ON COLUMN concord.tombstone_gap.peer IS 'the node whose older transactions are refused';
COMMENT ON COLUMN concord.tombstone_gap.origin IS 'the node whose deletions they had not applied';
COMMENT ON COLUMN concord.tombstone_gap.removed_upto IS 'commit timestamp of the newest such tombstone removed';

COMMENT ON FUNCTION concord.subscription_status_internal() IS
    'the rows of the view concord.subscription_status';
