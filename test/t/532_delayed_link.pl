# Causality across paths under a randomized workload with one slow link
# (issue 18): three nodes in a mesh, n3's subscription to n1 applying each
# transaction 1.5 s after its commit (apply_delay), every other link
# immediate.  Changes of n1 then reach n3 after the changes n2 made on top
# of them.
#
# Nodes n1 (priority 1), n2 (priority 3), n3 (priority 2).  Tables, keys
# 1..10, each row (id int PRIMARY KEY, v text):
#   c_fuw  first_update_wins, c_prio replica_priority: written by n1 and
#          n2 only, each waiting before it writes until it has applied
#          everything the other wrote, so that the writes form one causal
#          chain: each is later than every one before it, on every node.
#          Expected: per key, the last write of the chain (a DELETE: the
#          key absent), whatever the resolver: no two writes were
#          concurrent.  Without causality across paths, n3 let n1's late
#          change win over n2's later one under both resolvers.
#   c_lww  last_update_wins, written by all three, n3 without waiting for
#          n1's changes (so some of its writes are concurrent with them).
#          Expected: per key, the write with the latest commit timestamp
#          (the last-update-wins oracle; one clock).
# 150 single-statement transactions in a random order: UPDATE (55 %),
# upsert (INSERT ... ON CONFLICT (id) DO UPDATE, 30 %), DELETE (15 %).  A
# statement that changed no row is no write.  An UPDATE of n2 whose
# row n1 inserted may reach n3 first and be held there until the INSERT
# comes (docs/conflicts.md "An UPDATE that overtakes its cause").
# Pass: after everything is applied, the three nodes hold the expected
# rows in every table, no node recorded a conflict in c_fuw or c_prio
# other than delete_missing (n2's DELETE of a row n1 inserted reaches n3
# first: it finds no row, and the late INSERT then goes at once), and
# every subscription is replicating.  The seed is printed;
# CONCORD_SEED=<n> replays the same statements.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use ConcordRounds;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = ($ENV{CONCORD_SEED} // '') =~ /^\d+$/ ? $ENV{CONCORD_SEED} : int(rand(1 << 30));
diag("532_delayed_link: random seed $seed (CONCORD_SEED=$seed replays it)");
srand($seed);

my %priority = (n1 => 1, n2 => 3, n3 => 2);
my %node = map { $_ => concord_node($_, priority => $priority{$_}) } qw(n1 n2 n3);
my @nodes = map { $node{$_} } qw(n1 n2 n3);
my %resolver = (c_lww => 'last_update_wins', c_fuw => 'first_update_wins',
	c_prio => 'replica_priority');
my @tables = sort keys %resolver;
my $nkeys = 10;

run_on_all(\@nodes, join('', map {
	"CREATE TABLE $_ (id int PRIMARY KEY, v text NOT NULL);
	 SELECT concord.set_conflict_resolver('$_', '$resolver{$_}');"
} @tables));
$node{n1}->safe_psql('postgres', join('', map {
	"INSERT INTO $_ SELECT g, 'start' FROM generate_series(1, $nkeys) g;"
} @tables));
add_tables(\@nodes, \@tables);
foreach my $s (@nodes)
{
	foreach my $p (@nodes)
	{
		next if $s == $p;
		subscribe($s, $p, synchronize_data => ($p == $node{n1}) ? 1 : 0,
			($s == $node{n3} && $p == $node{n1}) ? (apply_delay => '1.5 s') : ());
	}
}
wait_replicating(\@nodes, 'mesh with a slow link');
wait_sync_complete(\@nodes);

# The writer waits until it has applied everything the others wrote so
# far, over its links that are not slow.
sub catch_up
{
	my ($writer, $from) = @_;
	foreach my $p (@$from)
	{
		wait_for_apply_one($writer, "sub_" . $writer->name . "_" . $p->name, $p)
		  or die "catching up failed: " . status_report(\@nodes);
	}
	return;
}

# One write: (rows changed, commit timestamp in microseconds or undef).
sub run_op
{
	my ($n, $t, $kind, $k, $v) = @_;
	my %stmt = (
		upsert => "INSERT INTO $t VALUES ($k, '$v') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
		update => "UPDATE $t SET v = '$v' WHERE id = $k",
		delete => "DELETE FROM $t WHERE id = $k");
	return write_with_commit_ts($n, $stmt{$kind});
}

my %expected = map { my $t = $_; $t => { map { $_ => 'start' } 1 .. $nkeys } } @tables;
my %latest_ts;    # c_lww: key -> commit timestamp of the expected value
my $since = { map { $_->name => $_->safe_psql('postgres',
	'SELECT coalesce(max(conflict_id), 0) FROM concord.conflict_history') } @nodes };
my %last_writer;    # table -> the node that wrote last
my $writes = 0;
foreach my $i (1 .. 150)
{
	my $t    = $tables[ int(rand(scalar @tables)) ];
	my $k    = 1 + int(rand($nkeys));
	my $r    = rand();
	my $kind = $r < 0.55 ? 'update' : $r < 0.85 ? 'upsert' : 'delete';
	my $w;
	if ($t eq 'c_lww')
	{
		$w = (qw(n1 n2 n3))[ int(rand(3)) ];
		# n3 does not wait for n1: some of its writes are concurrent.
		catch_up($node{$w}, [ grep { $_->name ne $w && !($w eq 'n3' && $_->name eq 'n1') } @nodes ]);
	}
	else
	{
		$w = rand() < 0.5 ? 'n1' : 'n2';
		my $other = $w eq 'n1' ? 'n2' : 'n1';
		catch_up($node{$w}, [ $node{$other} ])
		  if ($last_writer{$t} // $w) ne $w;
		$last_writer{$t} = $w;
	}
	my $v = "$w #$i";
	my ($changed, $ts) = run_op($node{$w}, $t, $kind, $k, $v);
	next unless $changed > 0;
	$writes++;
	my $value = $kind eq 'delete' ? undef : $v;
	if ($t eq 'c_lww')
	{
		next if defined $latest_ts{$k} && $ts <= $latest_ts{$k};
		$latest_ts{$k} = $ts;
	}
	$expected{$t}{$k} = $value;
}
diag("532_delayed_link: $writes writes");

# Everything applied everywhere, the slow link included.
foreach my $s (@nodes)
{
	foreach my $p (@nodes)
	{
		next if $s == $p;
		ok(wait_for_apply_one($s, 'sub_' . $s->name . '_' . $p->name, $p),
			$s->name . ' applied everything of ' . $p->name)
		  or diag(status_report(\@nodes));
	}
}
wait_replicating(\@nodes, 'at the end');

foreach my $t (@tables)
{
	my $want = rounds_dump_from($expected{$t});
	foreach my $n (@nodes)
	{
		my $got = rounds_dump_of($n, $t);
		is($got, $want, "$t: " . $n->name . ' holds the expected rows')
		  or diag(rounds_key_history(\@nodes, $t, $_, $since)) foreach 1 .. $nkeys;
	}
}
foreach my $n (@nodes)
{
	is( $n->safe_psql('postgres',
			"SELECT count(*) FROM concord.conflict_history
			  WHERE relation IN ('public.c_fuw', 'public.c_prio') AND conflict_id > $since->{$n->name}
			    AND conflict_type <> 'delete_missing'"),
		'0', $n->name . ': no conflict but delete_missing in the tables written as one causal chain')
	  or diag(conflict_history_of($n));
}

done_testing();
