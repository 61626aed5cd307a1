# A 3-node mesh (every node subscribes to every other, forward_origins
# '{}'): concurrent writes on every node, two sessions per node, to shared
# tables (disjoint key ranges per session: inserts, multi-row inserts,
# updates, key changes, range updates, deletes, rolled back transactions and
# subtransactions).  Pass criteria:
#   - every node holds exactly the rows the model of each session predicts
#     (count, sum, no duplicates) and the per-table checksums are equal;
#   - a disabled subscription applies nothing until enabled, then catches up;
#   - every provider's slots confirm its current WAL position;
#   - loop freedom: once caught up, no node writes a data change for 5 s.
# Random workload: the seed is printed; CONCORD_SEED=<n> replays it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = $ENV{CONCORD_SEED} // int(rand(1 << 30));
diag("100_mesh: random seed $seed (CONCORD_SEED=$seed replays it)");
srand($seed);

my @nodes  = concord_nodes(3);
my @tables = qw(mesh_a mesh_b);

run_on_all(\@nodes, q{
	CREATE TABLE mesh_a (id int PRIMARY KEY, origin text NOT NULL,
	                     v int NOT NULL, note text);
	CREATE TABLE mesh_b (id bigint PRIMARY KEY, origin text NOT NULL,
	                     v int NOT NULL, note text,
	                     pad text DEFAULT repeat('p', 200));
});
add_tables(\@nodes, \@tables);
build_mesh(\@nodes);
wait_replicating(\@nodes, 'mesh built');
wait_sync_complete(\@nodes);

is( $nodes[0]->safe_psql('postgres',
		'SELECT string_agg(node_name, \',\' ORDER BY node_name) FROM concord.node'),
	'n1,n2,n3', 'n1 learned its peers by subscribing');
ok( $nodes[0]->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'concord apply'}),
	'n1 runs one apply worker per subscription');

# Run one workload per session (two per node) concurrently; returns the
# models, keyed by origin label.
sub run_workloads
{
	my ($phase, $transactions) = @_;
	my (%models, @running);
	foreach my $i (1 .. 3)
	{
		foreach my $s (0, 1)
		{
			my $origin = "n${i}p${phase}s$s";
			my $lo = $i * 10_000_000 + $phase * 1_000_000 + $s * 100_000;
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
	}
	foreach my $r (@running)
	{
		my ($rc, undef, $stderr) = finish_psql($r->[1]);
		is($rc, 0, "phase $phase: workload $r->[0] ran without error")
		  or diag($stderr);
	}
	return \%models;
}

# --- phase 1: everybody writes ---------------------------------------------
my $models1 = run_workloads(1, 1000);
wait_for_apply_all(\@nodes, label => 'phase 1');
wait_replicating(\@nodes, 'after phase 1');
checksums_match(\@nodes, \@tables, 'phase 1');
apply_model_expectations(\@nodes, $models1, 'phase 1');

# --- phase 2: n3's subscription to n1 disabled while everybody writes -----
my ($n1, $n2, $n3) = @nodes;
$n3->safe_psql('postgres', "SELECT concord.alter_subscription_disable('sub_n3_n1')");
ok( $n3->poll_query_until('postgres',
		q{SELECT status = 'disabled' FROM concord.subscription_status
		   WHERE subscription_name = 'sub_n3_n1'}),
	'sub_n3_n1 shows as disabled');
ok( $n3->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'concord apply'}),
	'n3 keeps one apply worker (the disabled subscription has none)');

my $models2 = run_workloads(2, 400);
# Everything but sub_n3_n1 catches up.
my $others = 1;
foreach my $n (@nodes)
{
	foreach my $s (subscriptions_of($n))
	{
		next if $s->{name} eq 'sub_n3_n1';
		$others &&= wait_for_apply_one($n, $s->{name}, $s->{provider});
	}
}
ok($others, 'phase 2: the enabled subscriptions caught up');
is($n3->safe_psql('postgres',
		q{SELECT (SELECT count(*) FROM mesh_a WHERE origin LIKE 'n1p2%')
		       + (SELECT count(*) FROM mesh_b WHERE origin LIKE 'n1p2%')}),
	'0', 'phase 2: n3 applied nothing from n1 while disabled');
is($n3->safe_psql('postgres', q{SELECT count(*) > 0 FROM mesh_a WHERE origin LIKE 'n2p2%'}),
	't', 'phase 2: n3 applied n2\'s phase-2 writes meanwhile');

$n3->safe_psql('postgres', "SELECT concord.alter_subscription_enable('sub_n3_n1')");
wait_replicating(\@nodes, 'sub_n3_n1 enabled again');
wait_for_apply_all(\@nodes, label => 'phase 2');
checksums_match(\@nodes, \@tables, 'phase 2');
apply_model_expectations(\@nodes, { %$models1, %$models2 }, 'phase 2');

my $total = 0;
foreach my $m (values %$models1, values %$models2)
{
	$total += scalar keys %{ $m->{$_} } foreach keys %$m;
}
foreach my $n (@nodes)
{
	is( $n->safe_psql('postgres',
			'SELECT (SELECT count(*) FROM mesh_a) + (SELECT count(*) FROM mesh_b)'),
		$total, $n->name . ": holds exactly the $total committed rows, no more");
}

# --- the slots advance, and nothing loops -----------------------------------
slots_caught_up(\@nodes, 'after catch-up');
# WAL that holds nothing for any subscriber (a table in no set): the slots
# still confirm the providers' positions.
run_on_all(\@nodes, q{
	CREATE TABLE local_only (id int PRIMARY KEY, pad text);
	INSERT INTO local_only SELECT g, repeat('l', 100) FROM generate_series(1, 5000) g;
});
slots_caught_up(\@nodes, 'after WAL with nothing to ship');
check_loop_free(\@nodes, \@tables, seconds => 5);

# --- drop_subscription --------------------------------------------------------
my $origins = $n3->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_origin');
is($n1->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE plugin = 'concord'"),
	'2', 'n1 has a slot for each of its two subscribers');
unsubscribe($n3, 'sub_n3_n1');    # concord.drop_subscription
is($n3->safe_psql('postgres',
		"SELECT count(*) FROM concord.subscription_status WHERE subscription_name = 'sub_n3_n1'"),
	'0', 'the dropped subscription is gone from subscription_status');
is($n1->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE plugin = 'concord'"),
	'1', 'its slot on the provider n1 is dropped');
cmp_ok($n3->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_origin'), '<', $origins,
	'its replication origin on n3 is dropped');
ok($n3->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'concord apply'}),
	'n3 runs one apply worker (for n2) after the drop');
my (undef, undef, $stderr) = $n3->psql('postgres', "SELECT concord.drop_subscription('sub_n3_n1')");
like($stderr, qr/ERROR:.*sub_n3_n1/, 'dropping it again is an ERROR naming it');
(undef, undef, $stderr) =
  $n3->psql('postgres', "SELECT concord.drop_subscription('sub_n3_n1', ifexists := true)");
unlike($stderr, qr/ERROR/, '... but not with ifexists');
$n1->safe_psql('postgres', q{INSERT INTO mesh_a VALUES (1, 'after drop', 1, NULL)});
$n2->safe_psql('postgres', q{INSERT INTO mesh_a VALUES (2, 'after drop', 2, NULL)});
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1), 'n2 still receives from n1');
ok(wait_for_apply_one($n3, 'sub_n3_n2', $n2), 'n3 still receives from n2');
is($n3->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM mesh_a WHERE origin = 'after drop'}),
	'2', 'n3 gets n2\'s new row, not n1\'s');
is($n2->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM mesh_a WHERE origin = 'after drop'}),
	'1,2', 'n2 has both');

$_->stop foreach @nodes;
done_testing();
