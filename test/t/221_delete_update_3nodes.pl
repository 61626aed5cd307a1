# DELETE racing UPDATE in a 3-node mesh (n1, n2, n3; last_update_wins),
# the race of test/t/220_delete_update.pl between n1 and n2, seen by a
# third node that receives the two changes one after the other, in a
# known order, with VACUUM FREEZE before each delivery:
#
# Rows 1..6 are written (1, 3, 5 on n1; 2, 4, 6 on n2) and replicated;
# every subscription is disabled; the race, one transaction each:
#   n2 updates 1, n1 deletes 2, n1 updates 3, n2 deletes 4,
#   n1 deletes 1, n2 updates 2, n2 deletes 3, n1 updates 4,
#   n1 updates 5 (no race), n2 deletes 6 (no race);
# VACUUM FREEZE on every node; healing in two stages: first everything
# but n3's subscription to n2 (n1 and n2 settle the race, n3 receives
# n1's changes: the deletes of 1 and 2, the updates of 3 and 4), VACUUM
# FREEZE on n3 (its rows 3 and 4 are now frozen versions from n1, rows 1
# and 2 only tombstones), then n3's subscription to n2 (n2's updates of 1
# and 2 meet tombstones, n2's deletes of 3 and 4 meet n1's concurrent
# updates).
# Pass criteria:
#   - the three nodes converge to the later change of each row (1, 3 gone;
#     2, 4 with the update's values; 5 updated; 6 gone);
#   - n1 and n2: one update_deleted / delete_origin_differs per raced row,
#     as in 220; n3: exactly one conflict per raced row, for the second
#     arrival: update_deleted for rows 1, 2 (keep_local for 1, whose DELETE
#     is later; apply_remote for 2), delete_origin_differs for rows 3, 4
#     (apply_remote for 3, whose DELETE is later; keep_local for 4); the
#     first arrivals, causally after the pre-race versions, are no
#     conflict; no other conflict row anywhere.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2, $n3) = concord_nodes(3);
my @nodes = ($n1, $n2, $n3);
my %node = (n1 => $n1, n2 => $n2, n3 => $n3);

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

# --- VACUUM FREEZE -----------------------------------------------------------------
# Repeated until every page of dt is all-frozen in the visibility map (which
# also means no dead row version is left on it).
sub freeze
{
	my ($n, $label) = @_;
	ok(vacuum_freeze_until_frozen($n, 'dt'), "$label: VACUUM FREEZE left every page of dt all-frozen on " . $n->name);
	return;
}
freeze($_, 'before healing') foreach @nodes;

# --- heal, in two stages ------------------------------------------------------------
sub enable
{
	my ($n, $name) = @_;
	$n->safe_psql('postgres', "SELECT concord.alter_subscription_enable(" . quote_literal($name) . ")");
	return;
}
foreach my $n (@nodes)
{
	foreach my $s (subscriptions_of($n))
	{
		enable($n, $s->{name}) unless $s->{name} eq 'sub_n3_n2';
	}
}
{
	my @failed;
	foreach my $n (@nodes)
	{
		foreach my $s (subscriptions_of($n))
		{
			next if $s->{name} eq 'sub_n3_n2';
			push @failed, $s->{name} unless wait_for_apply_one($n, $s->{name}, $s->{provider});
		}
	}
	ok(!@failed, 'stage 1: every subscription but sub_n3_n2 caught up') or diag(status_report(\@nodes));
}
is($n3->safe_psql('postgres', 'SELECT id, v FROM dt ORDER BY id'),
	"3|n1 upd 3\n4|n1 upd 4\n5|n1 upd 5\n6|n2 ins",
	'stage 1: n3 applied n1\'s side of the race only');
is($n3->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
	'0', 'stage 1: n3 applied n1\'s changes (causally after the versions it had) without a conflict');
freeze($n3, 'between the stages');
enable($n3, 'sub_n3_n2');
wait_replicating(\@nodes, 'healed');
wait_for_apply_all(\@nodes, label => 'healed');

# The expected rows: the later change wins; equal timestamps: the change of
# the node with the higher name.
my $outcome = delete_update_converged(\@nodes, $change);    # id => 'delete' | 'update'

# --- history -------------------------------------------------------------------------
# Each node records update_deleted for the raced rows it deleted,
# delete_origin_differs for the ones it updated.
delete_update_history($node{$_}, $_, $change, $outcome) foreach qw(n1 n2);

# n3: one conflict per raced row, for the change that arrived second (n2's).
{
	my @want;
	foreach my $id (sort { $a <=> $b } keys %$outcome)
	{
		my ($second) = grep { $change->{$id}{$_}{node} eq 'n2' } qw(delete update);
		my $c = $change->{$id}{$second};
		push @want, join('|', $id,
			$second eq 'update' ? 'update_deleted' : 'delete_origin_differs',
			'last_update_wins',
			$outcome->{$id} eq $second ? 'apply_remote' : 'keep_local',
			'n2', $c->{ts},
			$outcome->{$id} eq 'update' ? $change->{$id}{update}{v} : '');
	}
	is( delete_update_history_rows($n3),
		join("\n", @want),
		'history: n3 records one conflict per raced row, for the second arrival, resolved for the later change'
	) or diag(conflict_history_of($n3, commit_ts => 1));
}

# On the updating node, the local version is its own UPDATE: origin and
# commit timestamp known although the row is frozen.
delete_update_local_versions($node{$_}, $_, $change, $outcome) foreach qw(n1 n2);

# --- causal writes after the race ------------------------------------------------------
# Re-insert of deleted keys, update of a resurrected row, delete: applied
# everywhere, no conflict.
delete_update_causal_writes(\@nodes);

$_->stop foreach @nodes;
done_testing();
