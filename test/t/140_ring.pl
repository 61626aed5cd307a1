# A 4-node ring: n1 -> n2 -> n3 -> n4 -> n1, each node subscribing to its
# predecessor with forward_origins '{all}', so a change travels up to three
# hops and must stop before it returns to its origin.  Every node writes
# (random workload, disjoint key ranges, concurrently).  Pass criteria:
#   - every node holds exactly the rows each origin's model predicts, each
#     exactly once (count = count(DISTINCT id)), equal checksums;
#   - every subscription is still replicating (a row that came back to its
#     origin would collide with itself);
#   - the slots confirm their providers' WAL positions, and no node writes a
#     data change for 5 s once everything is caught up (loop freedom).
# The seed is printed; CONCORD_SEED=<n> replays it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = $ENV{CONCORD_SEED} // int(rand(1 << 30));
diag("140_ring: random seed $seed (CONCORD_SEED=$seed replays it)");
srand($seed);

my @nodes  = concord_nodes(4);
my @tables = qw(ring_a ring_b);

run_on_all(\@nodes, q{
	CREATE TABLE ring_a (id int PRIMARY KEY, origin text NOT NULL, v int NOT NULL, note text);
	CREATE TABLE ring_b (id int PRIMARY KEY, origin text NOT NULL, v int NOT NULL, note text);
});
add_tables(\@nodes, \@tables);
build_ring(\@nodes);
wait_replicating(\@nodes, 'ring built');
wait_sync_complete(\@nodes);

foreach my $n (@nodes)
{
	ok( $n->poll_query_until('postgres',
			q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'concord apply'}),
		$n->name . ': one apply worker');
}

sub run_round
{
	my ($round, $transactions) = @_;
	my (%models, @running);
	foreach my $i (1 .. 4)
	{
		my $origin = "n${i}r$round";
		my $lo = $i * 1_000_000 + $round * 100_000;
		my ($sql, $model) = random_workload(
			rand         => sub { rand() },
			tables       => \@tables,
			lo           => $lo,
			hi           => $lo + 100_000,
			origin       => $origin,
			transactions => $transactions);
		$models{$origin} = $model;
		push @running, [ $origin, start_psql_file($nodes[ $i - 1 ], $sql) ];
	}
	foreach my $r (@running)
	{
		my ($rc, undef, $stderr) = finish_psql($r->[1]);
		is($rc, 0, "round $round: workload $r->[0] ran without error") or diag($stderr);
	}
	return \%models;
}

my %models;
foreach my $round (1, 2)
{
	my $m = run_round($round, 250);
	%models = (%models, %$m);
	# Three hops: three rounds of wait_for_apply around the ring.
	wait_for_apply_all(\@nodes, rounds => 3, label => "round $round");
	wait_replicating(\@nodes, "round $round");
	checksums_match(\@nodes, \@tables, "round $round");
	apply_model_expectations(\@nodes, \%models, "round $round");
}

my $total = 0;
foreach my $m (values %models)
{
	$total += scalar keys %{ $m->{$_} } foreach keys %$m;
}
foreach my $n (@nodes)
{
	is( $n->safe_psql('postgres',
			q{SELECT count(*) || '/' || count(DISTINCT (t, id)) FROM (
			    SELECT 'a' AS t, id FROM ring_a UNION ALL SELECT 'b', id FROM ring_b) s}),
		"$total/$total", $n->name . ": each of the $total rows exactly once");
}

# A single row's journey: written on n3, seen on n2 (three hops later), and
# back on n3 unchanged.
$nodes[2]->safe_psql('postgres', "INSERT INTO ring_a VALUES (42, 'hop', 1, 'three hops')");
wait_for_apply_all(\@nodes, rounds => 3, label => 'single row');
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', q{SELECT count(*) || ':' || min(v) FROM ring_a WHERE id = 42}),
		'1:1', $n->name . ': the single row arrived once');
}

slots_caught_up(\@nodes, 'ring');
check_loop_free(\@nodes, \@tables, seconds => 5);

$_->stop foreach @nodes;
done_testing();
