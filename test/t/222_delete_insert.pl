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

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);
my %node = (n1 => $n1, n2 => $n2);

setup_mesh(\@nodes, q{
	CREATE EXTENSION pg_visibility;
	CREATE TABLE di (id int PRIMARY KEY, v text NOT NULL);
}, ['di']);

$n1->safe_psql('postgres', q{INSERT INTO di SELECT g, 'n1 ins' FROM generate_series(1, 4) g});
wait_for_apply_all(\@nodes, label => 'initial rows');
checksums_match(\@nodes, ['di'], 'initial rows');

partition_nodes(\@nodes, 'partitioned');

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
	ok(vacuum_freeze_until_frozen($n, 'di'), $n->name . ': VACUUM FREEZE left every page of di all-frozen');
}

heal_nodes(\@nodes, 'healed');

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
