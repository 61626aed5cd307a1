# concord.table_diff() (issue 13): an exact comparison of a table across
# three nodes while writers run on every node and one link is slow.
#
# Three nodes in a mesh; n3 applies n1's changes 2 s late (apply_delay).
# Table t holds CONCORD_DIFF_ROWS rows (default 1,000,000) loaded on every
# node before replication (the rows that existed before).  Seed printed.
#  1. A diff of the identical table is clean.
#  2. A few hundred differences are injected on single nodes, as writes
#     under a replication origin that is not concord's (they replicate to
#     no node): rows deleted on one node (kind 'extra' from n1 when n1 has
#     them, 'missing' when n1 lost them), rows added on one node, values
#     changed, NULL against an empty string.  Writers then run on every
#     node on other keys (updates, inserts, deletes).  Five diffs in a row
#     from n1 each report exactly the injected keys, with their kinds, and
#     count rows in flight.
#  3. A peer stopped, before the run and in the middle of it (while its
#     fence waits): the run fails with an error naming it.
#  4. A diff worker killed (kill -9) while a transaction open on n2 holds
#     its fence: after the server's restart, wait_for_diff says failed.
#  5. Bad input: no key, unknown peer, this node as a peer, no peer, no
#     SELECT on the table, a zero timeout, waiting in the transaction
#     that asked, an unknown run.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $rows = $ENV{CONCORD_DIFF_ROWS} // 1000000;
my $seed = $ENV{CONCORD_SEED} // int(rand(1 << 30));
diag("seed $seed (CONCORD_SEED=$seed reruns it), $rows rows");
srand($seed);

my @nodes = concord_nodes(3, prefix => 'dn');
my ($n1, $n2, $n3) = @nodes;
my $ddl = 'CREATE TABLE t (id int PRIMARY KEY, v text, n int);';
run_on_all(\@nodes, $ddl);
# The rows that existed before replication, alike on every node: every
# 97th has a NULL v.
run_on_all(\@nodes, qq{
	INSERT INTO t SELECT g, CASE WHEN g % 97 = 0 THEN NULL ELSE 'row ' || g END, g % 1000
	  FROM generate_series(1, $rows) g;
	ANALYZE t;});
add_tables(\@nodes, ['t']);
foreach my $s (@nodes)
{
	foreach my $p (@nodes)
	{
		next if $s == $p;
		subscribe($s, $p, synchronize_data => 0,
			($s == $n3 && $p == $n1) ? (apply_delay => '2s') : ());
	}
}
wait_replicating(\@nodes, 'mesh built');

# Runs a diff of t from n1 and waits for its end; returns the run id.
sub run_diff
{
	my ($node, $args) = @_;
	$args //= "'t'";
	my $id = $node->safe_psql('postgres', "SELECT concord.table_diff($args)");
	$node->safe_psql('postgres', "SELECT concord.wait_for_diff($id, '10min')");
	return $id;
}

sub run_of
{
	my ($node, $id, $cols) = @_;
	return $node->safe_psql('postgres', "SELECT $cols FROM concord.diff_run WHERE run_id = $id");
}

# 1. Clean.
my $id = run_diff($n1);
is(run_of($n1, $id, 'status, differences, rows_settled, nodes'), "clean|0|$rows|{dn1,dn2,dn3}",
	'a diff of identical tables is clean, over every row and every node');

# 2. Differences injected on single nodes.
my %expected;						# id => kind, from n1's side
my %used;
sub pick
{
	my $k;
	do { $k = 1 + int(rand($rows / 2)) } while $used{$k} || $k % 97 == 0;
	$used{$k} = 1;
	return $k;
}
my %inject = (dn1 => [], dn2 => [], dn3 => []);
my $nkinds = 0;
foreach (1 .. 40 + int(rand(40)))
{
	my $k = pick();
	push @{ $inject{dn2} }, "DELETE FROM t WHERE id = $k";
	$expected{$k} = 'extra';
	$k = pick();
	push @{ $inject{dn3} }, "DELETE FROM t WHERE id = $k";
	$expected{$k} = 'extra';
	$k = pick();
	push @{ $inject{dn1} }, "DELETE FROM t WHERE id = $k";
	$expected{$k} = 'missing';
	$k = $rows + pick();
	push @{ $inject{dn3} }, "INSERT INTO t VALUES ($k, 'only on dn3', 3)";
	$expected{$k} = 'missing';
	$k = $rows + pick();
	push @{ $inject{dn1} }, "INSERT INTO t VALUES ($k, 'only on dn1', 1)";
	$expected{$k} = 'extra';
	$k = pick();
	push @{ $inject{dn2} }, "UPDATE t SET n = n + 1 WHERE id = $k";
	$expected{$k} = 'differs';
	$k = pick();
	push @{ $inject{dn1} }, "UPDATE t SET v = v || '.' WHERE id = $k";
	$expected{$k} = 'differs';
}
# NULL against an empty string.
foreach my $k (map { 97 * (1 + int(rand($rows / 200))) } 1 .. 20)
{
	next if $used{$k}++;
	push @{ $inject{dn3} }, "UPDATE t SET v = '' WHERE id = $k";
	$expected{$k} = 'differs';
}
foreach my $n (@nodes)
{
	$n->safe_psql('postgres', join(";\n",
		"SELECT pg_replication_origin_create('by_hand')",
		"SELECT pg_replication_origin_session_setup('by_hand')",
		@{ $inject{ $n->name } },
		"SELECT pg_replication_origin_session_reset()"));
}
my $injected = scalar keys %expected;
my $expected_list = join(',', map { "$_:$expected{$_}" } sort { $a <=> $b } keys %expected);

# Writers on every node, each on keys of its own above rows/2 (none
# injected), until told to stop; one transaction each 5 ms.
my $lo = int($rows / 2) + 1;
my $per = int(($rows - $lo) / 3);
my @writers;
foreach my $i (0 .. 2)
{
	my $n = $nodes[$i];
	my $from = $lo + $i * $per;
	$n->safe_psql('postgres', qq{
		CREATE TABLE stop_writing (stop boolean);	-- this node's own
		CREATE PROCEDURE write_rows() LANGUAGE plpgsql AS \$\$
		DECLARE
			i int := 0;
			k int;
		BEGIN
			PERFORM setseed(0.$seed);
			LOOP
				EXIT WHEN EXISTS (SELECT FROM stop_writing);
				i := i + 1;
				k := $from + (random() * ($per - 1))::int;
				IF i % 10 = 0 THEN
					DELETE FROM t WHERE id = k;
				ELSIF i % 10 = 1 THEN
					INSERT INTO t VALUES (k, 'back', i) ON CONFLICT (id) DO UPDATE SET v = 'again';
				ELSE
					UPDATE t SET n = n + 1, v = 'written on ${\ $n->name}' WHERE id = k;
				END IF;
				COMMIT;
				PERFORM pg_sleep(0.005);
			END LOOP;
		END \$\$;});
	push @writers, start_psql($n, "CALL write_rows();\n");
}
foreach my $n (@nodes)
{
	ok($n->poll_query_until('postgres', q{SELECT count(*) > 0 FROM t WHERE v LIKE 'written on%'}),
		$n->name . ': the writers run');
}

foreach my $round (1 .. 5)
{
	$id = run_diff($n1);
	my ($status, $diffs, $inflight, $error) = split /\|/,
	  run_of($n1, $id, 'status, differences, in_flight + keys_in_flight, error');
	is($status, 'divergent', "round $round: the diff ends divergent") or diag($error);
	is($diffs, $injected, "round $round: it counts the $injected injected differences");
	my $found = $n1->safe_psql('postgres', qq{
		SELECT string_agg((key->>'id') || ':' || kind, ',' ORDER BY (key->>'id')::int)
		  FROM concord.diff_row WHERE run_id = $id});
	is($found, $expected_list, "round $round: it reports exactly the injected keys, with their kinds");
	cmp_ok($inflight, '>', 0, "round $round: and counts rows in flight");
}

# What a difference shows: every node's row and version.
my $k = (grep { $expected{$_} eq 'differs' } sort { $a <=> $b } keys %expected)[0];
my $shown = $n1->safe_psql('postgres', qq{
	SELECT (rows->'dn1'->'row'->>'id')::int = $k,
	       rows ?& array['dn1', 'dn2', 'dn3'],
	       rows->'dn1'->>'digest' IS NOT NULL
	  FROM concord.diff_row WHERE run_id = $id AND key = '{"id": $k}'});
is($shown, 't|t|t', 'a difference shows each node\'s row and digest');

$_->safe_psql('postgres', 'INSERT INTO stop_writing VALUES (true)') foreach @nodes;
finish_psql($_) foreach @writers;

# 3. A peer stopped.
$n3->stop('fast');
$id = run_diff($n1, "'t', NULL, '1min'");
like(run_of($n1, $id, q{status || ': ' || error}), qr/^failed: node "dn3": could not connect/,
	'with a peer stopped, the run fails with an error naming it');
$n3->start;
wait_replicating(\@nodes, 'dn3 back');

# 3b. A peer stopped mid-run: while its fence waits for a transaction open
# there, dn3 goes down (immediate stop).
my $held = $n3->background_psql('postgres');
$held->query_safe("BEGIN; INSERT INTO t VALUES (-2, 'held', 0)");
$id = $n1->safe_psql('postgres', "SELECT concord.table_diff('t', NULL, '2min')");
ok($n3->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE query LIKE '%concord.fence%' AND wait_event_type = 'Extension')}),
	'the diff waits for the fence on dn3');
$n3->stop('immediate');
eval { $held->quit };
is($n1->safe_psql('postgres', "SELECT concord.wait_for_diff($id, '2min')"), 'failed',
	'with dn3 stopped mid-run, the run fails');
like(run_of($n1, $id, 'error'), qr/^node "dn3": /, 'its error names dn3');
$n3->start;
wait_replicating(\@nodes, 'dn3 back again');

# 4. The worker killed while a transaction open on n2 holds its fence.
my $open = $n2->background_psql('postgres');
$open->query_safe("BEGIN; INSERT INTO t VALUES (-1, 'open', 0)");
$id = $n1->safe_psql('postgres', "SELECT concord.table_diff('t')");
ok($n2->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE query LIKE '%concord.fence%' AND wait_event_type = 'Extension')}),
	'the diff waits for the fence on dn2');
my $pid = run_of($n1, $id, 'worker_pid');
ok(kill('KILL', $pid), 'the diff worker killed mid-run');
restart_after_crash($n1);
ok($n1->poll_query_until('postgres', "SELECT concord.wait_for_diff($id, '1s') = 'failed'"),
	'after its worker was killed, the run is failed');
like(run_of($n1, $id, 'error'), qr/the diff worker \(PID $pid\) stopped before the run ended/,
	'and says why');
is($n1->safe_psql('postgres', "SELECT count(*) FROM concord.diff_row WHERE run_id = $id"), '0',
	'it recorded no difference');
$open->query_safe('ROLLBACK');
$open->quit;

# 5. Bad input.
$n1->safe_psql('postgres', 'CREATE TABLE nokey (a int); CREATE ROLE reader; GRANT USAGE ON SCHEMA concord TO reader;
	GRANT EXECUTE ON FUNCTION concord.table_diff(regclass, name[], interval) TO reader;');
my @bad = (
	[ "SELECT concord.table_diff('nokey')", qr/table (public\.)?nokey has no primary key and no replica identity index/ ],
	[ "SELECT concord.table_diff('t', '{nosuch}')", qr/node "nosuch" is not known here/ ],
	[ "SELECT concord.table_diff('t', '{dn1}')", qr/peers names this node \("dn1"\)/ ],
	[ "SELECT concord.table_diff('t', '{}')", qr/peers must name at least one node/ ],
	[ "SELECT concord.table_diff('t', NULL, '0s')", qr/timeout must be positive/ ],
	[ "SET ROLE reader; SELECT concord.table_diff('t')", qr/permission denied for table t/ ],
	[ "BEGIN; SELECT concord.wait_for_diff(concord.table_diff('t'))", qr/cannot be used after a write of its transaction/ ],
	[ "SELECT concord.wait_for_diff(-5)", qr/no diff run -5/ ],
);
foreach my $b (@bad)
{
	my ($ret, $out, $err) = $n1->psql('postgres', $b->[0]);
	like($err, $b->[1], "refused: $b->[0]");
}

done_testing();
