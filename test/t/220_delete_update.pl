# DELETE racing UPDATE between two nodes (n1, n2; last_update_wins, the
# default), in both orders and with both nodes in both roles, with
# VACUUM FREEZE of the table on both nodes before healing (the deleted row
# version is gone, the surviving ones are frozen: only tombstones and
# recorded commit timestamps can tell what happened).
#
# Rows 1..6 are written and replicated; every subscription is disabled
# (no apply worker left); then, one transaction each, in this order:
#   n2 updates 1, n1 deletes 2, n1 updates 3, n2 deletes 4,
#   n1 deletes 1, n2 updates 2, n2 deletes 3, n1 updates 4,
#   n1 updates 5 (no race), n2 deletes 6 (no race);
# so that row 1 (n1 deletes) and row 3 (n2 deletes) are deleted after their
# concurrent update, rows 2 and 4 updated after their concurrent delete.
# The commit timestamps are read on the writers; VACUUM FREEZE on both
# nodes until the visibility map says every page is all-frozen; heal.
# Pass criteria:
#   - both nodes converge: a row whose DELETE committed later is gone, a
#     row whose UPDATE committed later is there with the update's values
#     (rows 5 and 6: the single change);
#   - the history (SPEC §5): for each raced row, the deleting node records
#     update_deleted (the remote UPDATE of a row deleted here) and the
#     updating node delete_origin_differs (the remote DELETE of a row it
#     wrote concurrently), resolved for the later change: apply_remote on
#     the node that receives the winner, keep_local on the other; no other
#     conflict row;
#   - afterwards, causal writes (re-insert of a deleted key, update of a
#     resurrected row, delete) apply on the other node without a conflict.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);
my %node = (n1 => $n1, n2 => $n2);
my %other = (n1 => 'n2', n2 => 'n1');

# Table dt in a mesh; rows 1, 3, 5 written on n1, 2, 4, 6 on n2 (so that the
# version a node deletes or updates comes from either node), replicated.
delete_update_setup(\@nodes);

# --- partition ---------------------------------------------------------------
partition_nodes(\@nodes, 'partitioned');

# --- the race ------------------------------------------------------------------
# One transaction per change (n2 updates 1, n1 deletes 2, ...: see
# delete_update_race in ConcordTest.pm), commit timestamps read on the
# writers, and the intended orders checked.
my $change = delete_update_race(\%node);    # {id}{delete|update} = { node, ts, v, n }

# --- VACUUM FREEZE on both nodes -------------------------------------------------
# Repeated until every page of dt is all-frozen in the visibility map (which
# also means no dead row version is left on it).
foreach my $n (@nodes)
{
	ok(vacuum_freeze_until_frozen($n, 'dt'), $n->name . ': VACUUM FREEZE left every page of dt all-frozen');
}

# --- heal ------------------------------------------------------------------------
heal_nodes(\@nodes, 'healed');

# The expected rows: the later change wins; equal timestamps: the change of
# the node with the higher name.
my $outcome = delete_update_converged(\@nodes, $change);    # id => 'delete' | 'update'

# --- history -------------------------------------------------------------------------
# Each node records update_deleted for the raced rows it deleted,
# delete_origin_differs for the ones it updated.
delete_update_history($node{$_}, $_, $change, $outcome) foreach qw(n1 n2);

# On the updating node, the local version is its own UPDATE: origin and
# commit timestamp known although the row is frozen.
delete_update_local_versions($node{$_}, $_, $change, $outcome) foreach qw(n1 n2);

# --- causal writes after the race ------------------------------------------------------
# Re-insert of deleted keys, update of a resurrected row, delete: applied
# everywhere, no conflict.
delete_update_causal_writes(\@nodes);

$_->stop foreach @nodes;
done_testing();
