# DELETE racing INSERT between two nodes (n1, n2; last_update_wins, the
# default).  SPEC §5: the timestamp resolvers converge "whatever the order
# of delivery, including DELETE racing UPDATE or INSERT".
#
# Rows 1..4 are written on n1 and replicated; every subscription is
# disabled (no apply worker left); then, one transaction each, in order:
#   row 1: n2 deletes it and inserts it again, then n1 deletes it
#          (n1's DELETE is the latest write: the row must end up gone);
#   row 2: n1 deletes it, then n2 deletes it and inserts it again
#          (n2's INSERT is the latest write: the row must end up there);
#   rows 3 and 4: the same with the roles of n1 and n2 swapped;
# VACUUM FREEZE on both nodes; heal.
# Pass criteria: both nodes hold the same rows, and each row is in the
# state of its latest write (gone for rows 1 and 3, re-inserted for 2 and
# 4).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);
my %node = (n1 => $n1, n2 => $n2);

run_on_all(\@nodes, q{
	CREATE EXTENSION pg_visibility;
	CREATE TABLE di (id int PRIMARY KEY, v text NOT NULL);
});
add_tables(\@nodes, ['di']);
build_mesh(\@nodes);
wait_replicating(\@nodes, 'mesh built');
wait_sync_complete(\@nodes);

$n1->safe_psql('postgres', q{INSERT INTO di SELECT g, 'n1 ins' FROM generate_series(1, 4) g});
wait_for_apply_all(\@nodes, label => 'initial rows');
checksums_match(\@nodes, ['di'], 'initial rows');

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

# One transaction per write; returns its commit timestamp (microseconds).
sub write_one
{
	my ($nn, $sql) = @_;
	my $xid = $node{$nn}->safe_psql('postgres',
		"BEGIN; $sql; SELECT pg_current_xact_id(); COMMIT;");
	return $node{$nn}->safe_psql('postgres',
		"SELECT (extract(epoch FROM pg_xact_commit_timestamp('$xid'::xid)) * 1000000)::bigint");
}

my %last;    # id => [kind of the latest write, its ts]
# row 1 / 3: re-insert, then the other node's DELETE (latest)
# row 2 / 4: the other node's DELETE, then delete + re-insert (latest)
foreach my $case ([ 1, 'n2', 'n1' ], [ 3, 'n1', 'n2' ])
{
	my ($id, $reinserter, $deleter) = @$case;
	write_one($reinserter, "DELETE FROM di WHERE id = $id");
	my $ins = write_one($reinserter, "INSERT INTO di VALUES ($id, '$reinserter re-insert')");
	my $del = write_one($deleter, "DELETE FROM di WHERE id = $id");
	cmp_ok($del, '>', $ins, "race: row $id: ${deleter}'s DELETE is later than ${reinserter}'s re-insert");
	$last{$id} = 'delete';
}
foreach my $case ([ 2, 'n2', 'n1' ], [ 4, 'n1', 'n2' ])
{
	my ($id, $reinserter, $deleter) = @$case;
	my $del = write_one($deleter, "DELETE FROM di WHERE id = $id");
	write_one($reinserter, "DELETE FROM di WHERE id = $id");
	my $ins = write_one($reinserter, "INSERT INTO di VALUES ($id, '$reinserter re-insert')");
	cmp_ok($ins, '>', $del, "race: row $id: ${reinserter}'s re-insert is later than ${deleter}'s DELETE");
	$last{$id} = 'insert';
}

foreach my $n (@nodes)
{
	my $frozen = 0;
	foreach my $try (1 .. 100)
	{
		$n->safe_psql('postgres', 'VACUUM (FREEZE) di');
		$frozen = $n->safe_psql('postgres',
			q{SELECT count(*) > 0 AND bool_and(all_frozen) FROM pg_visibility_map('di')}) eq 't';
		last if $frozen;
		Time::HiRes::sleep(0.1);    # poll: an old snapshot may still hold a dead version
	}
	ok($frozen, $n->name . ': VACUUM FREEZE left every page of di all-frozen');
}

foreach my $n (@nodes)
{
	$n->safe_psql('postgres',
		"SELECT concord.alter_subscription_enable(" . quote_literal($_->{name}) . ")")
	  foreach subscriptions_of($n);
}
wait_replicating(\@nodes, 'healed');
wait_for_apply_all(\@nodes, label => 'healed');

my $expected = "2|n2 re-insert\n4|n1 re-insert";
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT id, v FROM di ORDER BY id'), $expected,
		$n->name . ': DELETE racing INSERT converged to the latest write (1, 3 gone; 2, 4 re-inserted)')
	  or diag($n->name . " history:\n"
		  . $n->safe_psql('postgres',
			q{SELECT conflict_type, resolution, key, local_origin, remote_origin, resolved_row
			    FROM concord.conflict_history ORDER BY conflict_id}));
}
checksums_match(\@nodes, ['di'], 'healed');

$_->stop foreach @nodes;
done_testing();
