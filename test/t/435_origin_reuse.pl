# Versions keep their origin node after the subscription that applied them
# is dropped (review #8).  A row's commit timestamp record keeps only the
# 16-bit id of the replication origin its transaction committed under;
# drop_subscription drops its origins, and PostgreSQL gives a freed id to
# the next origin created.  Read through pg_replication_origin as it is
# now, the rows node_b wrote became "written here" once its origin was
# gone, and "written by node_d" once node_d's origin took its id:
#
#  - replica_priority (a 100, b 1, c 50, d 0): node_c's INSERT of a key
#    node_b wrote must win on node_a, as it does everywhere else;
#    attributed to node_a itself, the local row won;
#  - node_d's later INSERT of another key node_b wrote must lose; attributed
#    to node_d, the two versions had the same priority, and the later one,
#    node_d's, won.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my %prio = (node_a => 100, node_b => 1, node_c => 50, node_d => 0);
my %n = map { $_ => concord_node($_, priority => $prio{$_}) } sort keys %prio;
my @all = map { $n{$_} } sort keys %n;
run_on_all(\@all,
	'CREATE TABLE tp (id int PRIMARY KEY, v text);');
add_tables(\@all, ['tp']);
my $a = $n{node_a};
$a->safe_psql('postgres',
	"SELECT concord.set_conflict_resolver('tp', 'replica_priority')");

my $sub_b = subscribe($a, $n{node_b});
my $sub_c = subscribe($a, $n{node_c});
wait_replicating([$a], 'node_a receives from node_b and node_c');

$n{node_b}->safe_psql('postgres',
	"INSERT INTO tp VALUES (1, 'b'), (2, 'b')");
ok(wait_for_apply_one($a, $sub_b, $n{node_b}), "node_b's rows reached node_a");
my $roident = $a->safe_psql('postgres',
	q{SELECT roident FROM pg_replication_origin WHERE roname LIKE 'concord\_%\_node\_b'});
ok($roident ne '', "node_b's origin on node_a has id $roident");
is($a->safe_psql('postgres', 'SELECT (concord.row_version(xmin)).origin_node FROM tp WHERE id = 1'),
	'node_b', 'row_version: the row was written on node_b');

# The origin dangles.
unsubscribe($a, $sub_b);
is($a->safe_psql('postgres',
		q{SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'concord\_%\_node\_b'}),
	'0', "drop_subscription dropped node_b's origin");
is($a->safe_psql('postgres', 'SELECT (concord.row_version(xmin)).origin_node FROM tp WHERE id = 1'),
	'node_b', "row_version: still node_b's, once its origin is gone");

$n{node_c}->safe_psql('postgres', "INSERT INTO tp VALUES (1, 'c')");
ok(wait_for_apply_one($a, $sub_c, $n{node_c}), "node_c's INSERT reached node_a");
is($a->safe_psql('postgres', 'SELECT v FROM tp WHERE id = 1'), 'c',
	"replica_priority: node_c's row (priority 50) won over node_b's (priority 1)");
is($a->safe_psql('postgres',
		q{SELECT local_origin || '/' || resolution FROM concord.conflict_history
		   WHERE relation = 'public.tp' AND key->>'id' = '1'}),
	'node_b/apply_remote', "the conflict names node_b as the local row's writer");

# The id is given to node_d's origin.
my $sub_d = subscribe($a, $n{node_d});
wait_replicating([$a], 'node_a receives from node_d');
$n{node_d}->safe_psql('postgres', "INSERT INTO tp VALUES (2, 'd')");
ok(wait_for_apply_one($a, $sub_d, $n{node_d}), "node_d's INSERT reached node_a");
is($a->safe_psql('postgres',
		q{SELECT roident FROM pg_replication_origin WHERE roname LIKE 'concord\_%\_node\_d'}),
	$roident, "node_d's origin took the id node_b's had");
is($a->safe_psql('postgres',
		"SELECT string_agg(node_name, ',' ORDER BY since_xid) FROM concord.origin_history
		  WHERE roident = $roident"),
	'node_b,,node_d', 'origin_history: the id stood for node_b, for no node from its drop on, then for node_d');
is($a->safe_psql('postgres', 'SELECT v || (concord.row_version(xmin)).origin_node FROM tp WHERE id = 2'),
	'bnode_b', "replica_priority: node_b's row (priority 1) stays over node_d's (priority 0), and is still node_b's");
is($a->safe_psql('postgres',
		q{SELECT local_origin || '/' || remote_origin || '/' || resolution
		    FROM concord.conflict_history WHERE relation = 'public.tp' AND key->>'id' = '2'}),
	'node_b/node_d/keep_local', 'the conflict names node_b as the local row\'s writer');

done_testing();
