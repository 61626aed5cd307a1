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
use Time::HiRes ();

my ($n1, $n2, $n3) = concord_nodes(3);
my @nodes = ($n1, $n2, $n3);
my %node = (n1 => $n1, n2 => $n2, n3 => $n3);

run_on_all(\@nodes, q{
	CREATE EXTENSION pg_visibility;
	CREATE TABLE dt (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
});
add_tables(\@nodes, ['dt']);
build_mesh(\@nodes);
wait_replicating(\@nodes, 'mesh built');
wait_sync_complete(\@nodes);

# The rows before the race: written on both nodes (so that the version a
# node deletes or updates comes from either node).
$n1->safe_psql('postgres', q{INSERT INTO dt VALUES (1, 'n1 ins', 0), (3, 'n1 ins', 0), (5, 'n1 ins', 0)});
$n2->safe_psql('postgres', q{INSERT INTO dt VALUES (2, 'n2 ins', 0), (4, 'n2 ins', 0), (6, 'n2 ins', 0)});
wait_for_apply_all(\@nodes, label => 'initial rows');
checksums_match(\@nodes, ['dt'], 'initial rows');

# --- partition ---------------------------------------------------------------
foreach my $n (@nodes)
{
	$n->safe_psql('postgres',
		"SELECT concord.alter_subscription_disable(" . quote_literal($_->{name}) . ")")
	  foreach subscriptions_of($n);
}
{
	my $ok = 1;
	foreach my $n (@nodes)
	{
		$ok &&= $n->poll_query_until('postgres',
			q{SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'concord apply')
			     AND (SELECT bool_and(status = 'disabled') FROM concord.subscription_status)});
	}
	ok($ok, 'partitioned: every subscription disabled, no apply worker runs')
	  or diag(status_report(\@nodes));
}

# --- the race ------------------------------------------------------------------
# One transaction per change; returns its commit timestamp (microseconds
# since the epoch), read on the writer.
my %change;    # {id}{delete|update} = { node, ts, v, n }
sub write_change
{
	my ($nn, $kind, $id) = @_;
	my $n = $node{$nn};
	my ($v, $cnt) = ("$nn upd $id", 0);
	my $sql = $kind eq 'delete'
	  ? "WITH c AS (DELETE FROM dt WHERE id = $id RETURNING 1) SELECT count(*), pg_current_xact_id() FROM c"
	  : "WITH c AS (UPDATE dt SET v = '$v', n = n + 1 WHERE id = $id RETURNING 1)
	     SELECT count(*), pg_current_xact_id() FROM c";
	my ($rows, $xid) = split /\|/, $n->safe_psql('postgres', $sql);
	is($rows, '1', "race: $nn ${kind}s row $id");
	my $ts = $n->safe_psql('postgres',
		"SELECT (extract(epoch FROM pg_xact_commit_timestamp('$xid'::xid)) * 1000000)::bigint");
	$change{$id}{$kind} = { node => $nn, ts => $ts, v => $v, n => 1 };
	return;
}

write_change('n2', 'update', 1);
write_change('n1', 'delete', 2);
write_change('n1', 'update', 3);
write_change('n2', 'delete', 4);
write_change('n1', 'delete', 1);
write_change('n2', 'update', 2);
write_change('n2', 'delete', 3);
write_change('n1', 'update', 4);
write_change('n1', 'update', 5);
write_change('n2', 'delete', 6);

# The intended orders hold (sanity of the setup, not of concord).
foreach my $id (1, 3)
{
	cmp_ok($change{$id}{delete}{ts}, '>', $change{$id}{update}{ts},
		"race: row $id: the DELETE committed after the UPDATE");
}
foreach my $id (2, 4)
{
	cmp_ok($change{$id}{update}{ts}, '>', $change{$id}{delete}{ts},
		"race: row $id: the UPDATE committed after the DELETE");
}

# --- VACUUM FREEZE -----------------------------------------------------------------
# Repeated until every page of dt is all-frozen in the visibility map (which
# also means no dead row version is left on it).
sub freeze
{
	my ($n, $label) = @_;
	my $frozen = 0;
	foreach my $try (1 .. 100)
	{
		$n->safe_psql('postgres', 'VACUUM (FREEZE) dt');
		$frozen = $n->safe_psql('postgres',
			q{SELECT count(*) > 0 AND bool_and(all_frozen) FROM pg_visibility_map('dt')}) eq 't';
		last if $frozen;
		Time::HiRes::sleep(0.1);    # poll: an old snapshot may still hold a dead version
	}
	ok($frozen, "$label: VACUUM FREEZE left every page of dt all-frozen on " . $n->name);
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
my @expected;
my %outcome;    # id => 'delete' | 'update' (the winner of a race)
foreach my $id (1 .. 6)
{
	my $d = $change{$id}{delete};
	my $u = $change{$id}{update};
	my $winner;
	if ($d && $u)
	{
		$winner =
		    $d->{ts} > $u->{ts} ? 'delete'
		  : $u->{ts} > $d->{ts} ? 'update'
		  : ($d->{node} gt $u->{node} ? 'delete' : 'update');
		$outcome{$id} = $winner;
	}
	else
	{
		$winner = $d ? 'delete' : 'update';
	}
	push @expected, "$id|$u->{v}|$u->{n}" if $winner eq 'update';
}
my $expected = join("\n", @expected);
note("expected rows after healing:\n$expected");

foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT id, v, n FROM dt ORDER BY id'),
		$expected,
		$n->name . ': DELETE racing UPDATE converged to the later change (rows 1, 3 gone; 2, 4 updated)');
}
checksums_match(\@nodes, ['dt'], 'healed');


# --- history -------------------------------------------------------------------------
sub history_of
{
	my ($n) = @_;
	return $n->safe_psql('postgres', q{
		SELECT conflict_id, conflict_type, resolver, resolution, key, local_origin, local_commit_ts,
		       local_row, remote_origin, remote_commit_ts, remote_row, resolved_row
		  FROM concord.conflict_history ORDER BY conflict_id});
}

foreach my $nn (qw(n1 n2))
{
	my @want;
	foreach my $id (sort { $a <=> $b } keys %outcome)
	{
		my $d = $change{$id}{delete};
		my $u = $change{$id}{update};
		my $win = $outcome{$id};
		if ($d->{node} eq $nn)
		{
			# the remote UPDATE of a row deleted here
			push @want, join('|', $id, 'update_deleted', 'last_update_wins',
				$win eq 'update' ? 'apply_remote' : 'keep_local',
				$u->{node}, $u->{ts},
				$win eq 'update' ? $u->{v} : '');
		}
		else
		{
			# the remote DELETE of a row written here concurrently
			push @want, join('|', $id, 'delete_origin_differs', 'last_update_wins',
				$win eq 'delete' ? 'apply_remote' : 'keep_local',
				$d->{node}, $d->{ts},
				$win eq 'update' ? $u->{v} : '');
		}
	}
	is( $node{$nn}->safe_psql('postgres', q{
			SELECT key->>'id', conflict_type, resolver, resolution, remote_origin,
			       (extract(epoch FROM remote_commit_ts) * 1000000)::bigint,
			       coalesce(resolved_row->>'v', '')
			  FROM concord.conflict_history ORDER BY (key->>'id')::int, conflict_id}),
		join("\n", @want),
		"history: $nn records update_deleted for the rows it deleted, delete_origin_differs for the rows it updated, resolved for the later change"
	) or diag(history_of($node{$nn}));
}

# n3: one conflict per raced row, for the change that arrived second (n2's).
{
	my @want;
	foreach my $id (sort { $a <=> $b } keys %outcome)
	{
		my ($second) = grep { $change{$id}{$_}{node} eq 'n2' } qw(delete update);
		my $c = $change{$id}{$second};
		push @want, join('|', $id,
			$second eq 'update' ? 'update_deleted' : 'delete_origin_differs',
			'last_update_wins',
			$outcome{$id} eq $second ? 'apply_remote' : 'keep_local',
			'n2', $c->{ts},
			$outcome{$id} eq 'update' ? $change{$id}{update}{v} : '');
	}
	is( $n3->safe_psql('postgres', q{
			SELECT key->>'id', conflict_type, resolver, resolution, remote_origin,
			       (extract(epoch FROM remote_commit_ts) * 1000000)::bigint,
			       coalesce(resolved_row->>'v', '')
			  FROM concord.conflict_history ORDER BY (key->>'id')::int, conflict_id}),
		join("\n", @want),
		'history: n3 records one conflict per raced row, for the second arrival, resolved for the later change'
	) or diag(history_of($n3));
}

# On the updating node, the local version is its own UPDATE: origin and
# commit timestamp known although the row is frozen.
foreach my $nn (qw(n1 n2))
{
	my @want;
	foreach my $id (sort { $a <=> $b } keys %outcome)
	{
		my $u = $change{$id}{update};
		push @want, "$id|$nn|$u->{ts}|$u->{v}" if $u->{node} eq $nn;
	}
	is( $node{$nn}->safe_psql('postgres', q{
			SELECT key->>'id', local_origin,
			       (extract(epoch FROM local_commit_ts) * 1000000)::bigint, local_row->>'v'
			  FROM concord.conflict_history WHERE conflict_type = 'delete_origin_differs'
			 ORDER BY (key->>'id')::int, conflict_id}),
		join("\n", @want),
		"history: ${nn}'s delete_origin_differs rows name its frozen local version (origin, commit timestamp, row)"
	) or diag(history_of($node{$nn}));
}

# --- causal writes after the race ------------------------------------------------------
my %before = map { $_->name => $_->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history') } @nodes;
$n2->safe_psql('postgres', q{INSERT INTO dt VALUES (1, 'n2 re-insert', 0)});
$n1->safe_psql('postgres', q{UPDATE dt SET v = 'n1 after race', n = n + 1 WHERE id = 2});
$n1->safe_psql('postgres', q{DELETE FROM dt WHERE id = 4});
$n2->safe_psql('postgres', q{INSERT INTO dt VALUES (3, 'n2 re-insert', 0)});
wait_for_apply_all(\@nodes, label => 'causal writes after the race');
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT id, v FROM dt ORDER BY id'),
		"1|n2 re-insert\n2|n1 after race\n3|n2 re-insert\n5|n1 upd 5",
		$n->name . ': causal writes after the race applied');
	is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
		$before{ $n->name },
		$n->name . ': causal writes after the race (re-insert over a tombstone, update, delete) are no conflict')
	  or diag(history_of($n));
}

$_->stop foreach @nodes;
done_testing();
