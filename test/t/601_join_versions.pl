# A node joins while changes that conflict with each other are in flight,
# and every row the copy brings keeps its version.
#
# n1 and n2 form a mesh; n1 applies n2's changes 8 seconds late
# (apply_delay).  n3 joins through n1, and its copy's fence on n1 is held
# (a session there called concord.join_fence and stays in its
# transaction) while, in that order:
#   - n2 updates row 1, deletes nothing, updates row 2, inserts row 3;
#   - n1 updates row 1, deletes row 2, inserts row 3: newer than n2's.
# The copy then holds n1's versions, and n2's older changes reach n3 only
# through its subscription to n2 (n1 had not applied them at the fence).
# With last_update_wins every node must end with n1's versions: n3 too,
# which needs the copied rows to keep n1's commit times and origin, and
# n1's tombstone of row 2.  Without versions (a copy written as the common
# baseline), n2's older changes would replace them on n3 only.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2);
my $ddl = q{CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);};
run_on_all([ $n1, $n2 ], $ddl);
add_tables([ $n1, $n2 ], ['t']);
subscribe($n2, $n1);
subscribe($n1, $n2, apply_delay => '8s');
wait_replicating([ $n1, $n2 ], 'mesh');
$n1->safe_psql('postgres', "INSERT INTO t VALUES (1, 'base'), (2, 'base')");
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1), 'n2 has the base rows');

my $n3 = concord_node('n3');
$n3->safe_psql('postgres', $ddl);
add_tables([$n3], ['t']);

# The fence on n1 is held: n3's copy waits for it.
my $holder = $n1->background_psql('postgres');
$holder->query_safe(q{BEGIN; SELECT count(*) FROM concord.join_fence('{}'::text[], '{}'::pg_lsn[])});
is($n3->safe_psql('postgres',
	"SELECT concord.join_mesh(" . quote_literal($n1->connstr('postgres')) . ")",
	timeout => $ConcordTest::TIMEOUT), '4', 'n3 joined through n1: 4 subscriptions');
ok($n1->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM pg_stat_activity
	   WHERE wait_event_type = 'Lock' AND query LIKE '%join_fence%'}),
	"n3's copy waits at n1's fence");

$n2->safe_psql('postgres', q{
	UPDATE t SET v = 'n2' WHERE id = 1;
	UPDATE t SET v = 'n2' WHERE id = 2;
	INSERT INTO t VALUES (3, 'n2');
});
$n1->safe_psql('postgres', q{
	UPDATE t SET v = 'n1' WHERE id = 1;
	DELETE FROM t WHERE id = 2;
	INSERT INTO t VALUES (3, 'n1');
});
is($n1->safe_psql('postgres', 'SELECT string_agg(id || v, \',\' ORDER BY id) FROM t'),
	'1n1,3n1', "n1 has not applied n2's changes yet");
$holder->query_safe('COMMIT');
$holder->quit;

$n3->safe_psql('postgres', "SELECT concord.wait_for_subscription_sync_complete('n3_from_n1')",
	timeout => $ConcordTest::TIMEOUT);
ok($n3->poll_query_until('postgres',
	q{SELECT count(*) = 2 AND bool_and(status = 'replicating') FROM concord.subscription_status}),
	'n3 replicates from both') or diag(status_report([$n3]));

# Everything delivered everywhere, n2's changes on n1 after their delay.
my %by_name = (n1 => $n1, n2 => $n2, n3 => $n3);
foreach my $n ($n1, $n2, $n3)
{
	foreach my $row (split /\n/, $n->safe_psql('postgres',
		'SELECT subscription_name, provider_node FROM concord.subscription_status'))
	{
		my ($name, $prov) = split /\|/, $row;
		ok(wait_for_apply_one($n, $name, $by_name{$prov}), $n->name . ": $name caught up");
	}
}
foreach my $n ($n1, $n2, $n3)
{
	is($n->safe_psql('postgres', 'SELECT string_agg(id || v, \',\' ORDER BY id) FROM t'),
		'1n1,3n1', $n->name . " holds n1's newer versions");
}
is($n3->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT o.node, ',')
	  FROM t, LATERAL concord.row_version(t.xmin) o(commit_ts, node)}),
	'n1', "n3's copied rows carry n1 as their origin");

done_testing();
