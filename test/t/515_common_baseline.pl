# The common baseline (SPEC §4; issue "Trust", point 4; review #5): rows
# each node held before they were connected (the same rows loaded on every
# node before create_node, subscriptions made with synchronize_data =>
# false), and rows an initial copy wrote, are not conflicts when another
# node changes them later.  Before, every such change was recorded as update_origin_differs
# on every other node (and apply paid for each), and a copied row's version
# was the copy's local commit time.
#
# 1. Three servers load the same 300 rows, then become nodes and form a
#    mesh without copies;
#    n1 updates 100 of them, one transaction each: n2 and n3 apply them
#    with no conflict recorded.
# 2. A fourth node copies the table from n1 (synchronize_data => true) and
#    subscribes to n2 without a copy; n2 updates 50 rows: n4 applies them
#    with no conflict, and holds what the others hold.  Then the others
#    subscribe to n4, which updates 20 copied rows that n1 wrote in part 1:
#    no conflict anywhere (the copy told n4's SEEN vector about them).
# 3. Control: a real conflict on a baseline row (n1 and n2 update the same
#    row while apart) is still detected and resolved the same everywhere.
# 4. An INSERT that overtakes the DELETE of a baseline row: n3's link from
#    n1 is down while n1 deletes a baseline row and n2, having applied the
#    DELETE, inserts the key again.  n3 receives n2's INSERT while it
#    still holds the baseline row: apply holds the INSERT (the
#    subscription shows down with the reason) until n1's DELETE has come,
#    then applies it over the DELETE's tombstone.  Pass: every node holds
#    n2's row and no node records a conflict (before, n3 recorded an
#    insert_exists and then a delete_origin_differs; under
#    first_update_wins the baseline row won and the late DELETE then left
#    n3 without the row).  The key's table is under first_update_wins.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Rows $from..$to updated on $node, one transaction each.
sub update_each
{
	my ($node, $from, $to, $v) = @_;
	$node->safe_psql('postgres', qq{
		DO \$\$
		BEGIN
			FOR i IN $from..$to LOOP
				UPDATE t SET v = '$v', n = n + 1 WHERE id = i;
				COMMIT;
			END LOOP;
		END \$\$;});
	return;
}

# The rows are loaded before concord is set up (create_node).
my @mesh = map { concord_node("base$_", extension => 0) } 1 .. 3;
my ($n1, $n2, $n3) = @mesh;
run_on_all(\@mesh, "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
	INSERT INTO t SELECT g, 'loaded', 0 FROM generate_series(1, 300) g;");
foreach my $n (@mesh)
{
	$n->safe_psql('postgres', 'CREATE EXTENSION concord; SELECT concord.create_node('
		  . quote_literal($n->name) . ', ' . quote_literal($n->connstr('postgres')) . ')');
}
my $n4 = concord_node('base4');
$n4->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);');
add_tables([ @mesh, $n4 ], ['t']);
build_mesh(\@mesh, synchronize_data => 0);
wait_replicating(\@mesh, 'mesh on existing data');

# 1. Changes of the rows every node held before.
update_each($n1, 1, 100, 'updated on base1');
wait_for_apply_all(\@mesh, label => 'updates of the baseline');
foreach my $n ($n2, $n3)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'), '0',
		$n->name . ' recorded no conflict for the rows every node held before')
	  or diag(conflict_history_of($n));
}
checksums_match(\@mesh, ['t'], 'baseline updated');

# 2. Rows an initial copy wrote.
subscribe($n4, $n1, synchronize_data => 1);
subscribe($n4, $n2, synchronize_data => 0);
ok($n4->poll_query_until('postgres', q{
		SELECT bool_and(status = 'replicating') AND count(*) = 2 FROM concord.subscription_status}),
	'base4 copied from base1 and streams from base1 and base2');
wait_for_apply_all([ @mesh, $n4 ], label => 'base4 caught up');
is($n4->safe_psql('postgres', q{
		SELECT pg_xact_commit_timestamp(xmin) = '2000-01-01 00:00:00.000001+00'
		  FROM t WHERE id = 300}),
	't', 'a copied row carries the commit timestamp of the baseline');
update_each($n2, 151, 200, 'updated on base2');
wait_for_apply_all([ @mesh, $n4 ], label => 'updates of copied rows');
is($n4->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'), '0',
	'base4 recorded no conflict for the rows its copy wrote')
  or diag(conflict_history_of($n4));
checksums_match([ @mesh, $n4 ], ['t'], 'copied rows updated');

# The copier's own changes of copied rows that base1 wrote after the
# mesh was made (part 1): base4 had them from its copy, so its changes are
# not concurrent with them (its SEEN vector says it had base1's commits up
# to the copy).  Before, every one was an update_origin_differs elsewhere.
subscribe($_, $n4, synchronize_data => 0) foreach @mesh;
wait_replicating([ @mesh, $n4 ], 'the others subscribe to base4');
update_each($n4, 1, 20, 'updated on base4');
wait_for_apply_all([ @mesh, $n4 ], label => "base4's updates of copied rows");
foreach my $n (@mesh)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'), '0',
		$n->name . " recorded no conflict for base4's changes of rows it copied")
	  or diag(conflict_history_of($n));
}
checksums_match([ @mesh, $n4 ], ['t'], "base4's updates applied");

# 3. A real conflict on a baseline row is still one.
partition_nodes(\@mesh, 'apart');
$n1->safe_psql('postgres', "UPDATE t SET v = 'first, on base1' WHERE id = 250");
$n2->safe_psql('postgres', "UPDATE t SET v = 'later, on base2' WHERE id = 250");
heal_nodes(\@mesh, 'healed');
wait_for_apply_all([ @mesh, $n4 ], label => 'after the race');
is($n1->safe_psql('postgres', q{
		SELECT conflict_type || ' ' || resolution FROM concord.conflict_history WHERE key ->> 'id' = '250'}),
	'update_origin_differs apply_remote', 'base1 records the concurrent update of row 250, and takes the later one');
foreach my $n (@mesh, $n4)
{
	is($n->safe_psql('postgres', 'SELECT v FROM t WHERE id = 250'), 'later, on base2',
		$n->name . ' holds the later update of row 250');
}
checksums_match([ @mesh, $n4 ], ['t'], 'after the race');

# 4. An INSERT that overtakes the DELETE of a baseline row.
$_->safe_psql('postgres', "SELECT concord.set_conflict_resolver('t', 'first_update_wins')")
  foreach (@mesh, $n4);
my $marks = history_marks([ @mesh, $n4 ]);
link_down($n3, $n1);
$n1->safe_psql('postgres', 'DELETE FROM t WHERE id = 260');
link_applied($n2, $n1, 'the DELETE of row 260');
$n2->safe_psql('postgres', "INSERT INTO t VALUES (260, 'inserted again on base2', 7)");
ok( $n3->poll_query_until('postgres', q{
		SELECT status = 'down' AND last_error LIKE '%waiting for the changes of node "base1"%remote INSERT from node "base2"%'
		  FROM concord.subscription_status WHERE subscription_name = 'sub_base3_base2'}),
	'base3 holds the INSERT of row 260 until the DELETE it follows has come')
  or diag($n3->safe_psql('postgres', 'SELECT * FROM concord.subscription_status'));
is($n3->safe_psql('postgres', 'SELECT v FROM t WHERE id = 260'), 'loaded',
	'base3 still holds the baseline row 260 meanwhile');
link_up($n3, $n1);
wait_replicating([ @mesh, $n4 ], 'the INSERT of row 260 applied');
wait_for_apply_all([ @mesh, $n4 ], label => 'after the INSERT of row 260');
foreach my $n (@mesh, $n4)
{
	is($n->safe_psql('postgres', 'SELECT v FROM t WHERE id = 260'), 'inserted again on base2',
		$n->name . ' holds the row base2 inserted again');
}
no_conflicts_since([ @mesh, $n4 ], 'INSERT after the DELETE of a baseline row', $marks);
checksums_match([ @mesh, $n4 ], ['t'], 'after the INSERT of row 260');

$_->stop foreach ($n4, reverse @mesh);
done_testing();
