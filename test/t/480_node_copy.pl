# A copy of a node is not that node (SPEC §2, review #27).  Before, a
# pg_basebackup of node cp2, started as a new server while cp2 was down,
# streamed from cp2's slot on cp1 and confirmed it there: when cp2 came
# back it never received what cp1 wrote meanwhile.
#
# Now the copy knows it is one (its server lacks the node's marker slot),
# starts no worker, shows its subscription down saying what it is and what
# to do, refuses create_subscription, and drop_subscription there leaves
# the original's slot alone.  The original loses nothing.  The copy then
# becomes a new node the way the HINT says.  Finally the original itself,
# once its marker is gone (as after pg_upgrade), is refused too until
# concord.reclaim_node_identity(), and its subscriber shows why it
# does not stream.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($a, $b) = concord_nodes(2, prefix => 'cp');
setup_mesh([ $a, $b ], 'CREATE TABLE t (id int PRIMARY KEY, v text);', ['t']);
$b->safe_psql('postgres', "INSERT INTO t SELECT g, 'b' FROM generate_series(1, 10) g");
wait_for_apply_all([ $a, $b ]);
is($b->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'this node',
	'the original knows it is its node');

my $b_slot = $b->safe_psql('postgres', q{SELECT slot_name FROM concord.subscription_status});

# The copy: a base backup of cp2, started as a server of its own.
$b->backup('cp2_backup');
my $copy = PostgreSQL::Test::Cluster->new('cp2_copy');
$copy->init_from_backup($b, 'cp2_backup');
$copy->start;
$b->stop;

is($copy->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'copy',
	'the copy knows it is a copy');
like($copy->safe_psql('postgres', 'SELECT detail FROM concord.node_status'),
	qr/lacks the node's marker slot/, 'and says why');
ok($copy->poll_query_until('postgres',
		q{SELECT status = 'down' AND last_error LIKE 'this database is a copy of node "cp2"%'
		    FROM concord.subscription_status}),
	'its subscription shows down, saying it is a copy');
like($copy->safe_psql('postgres', 'SELECT last_error FROM concord.subscription_status'),
	qr/drop its subscriptions.*create_node\(\) with a new name/, 'with what to do');

# cp1 writes while the original is down; the copy takes nothing.
$a->safe_psql('postgres', "INSERT INTO t SELECT g, 'a' FROM generate_series(101, 300) g");
my $confirmed = $a->safe_psql('postgres',
	"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$b_slot'");
ok($copy->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'concord apply'}),
	'no apply worker runs on the copy');
$copy->wait_for_log(qr/concord starts no worker in database "postgres": it is a copy of its node/);
is($a->safe_psql('postgres',
		"SELECT active || ' ' || confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$b_slot'"),
	"false $confirmed", "the original's slot on cp1 is neither used nor moved by the copy");

my ($ret, $out, $err) = $copy->psql('postgres',
	"SELECT concord.create_subscription('more', " . quote_literal($a->connstr('postgres')) . ')');
like($err, qr/this database is a copy of node "cp2", not that node/,
	'create_subscription is refused on the copy');

# The original comes back and receives everything.
$b->start;
wait_for_apply_all([$b]);
is($b->safe_psql('postgres', 'SELECT count(*) FROM t'), '210',
	'the original received every row written while it was down');

# The copy becomes a new node, as the HINT says.
$copy->safe_psql('postgres', q{SELECT concord.drop_subscription('sub_cp2_cp1')});
is($a->safe_psql('postgres',
		"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$b_slot'"),
	'1', "dropping the copy's subscription left the original's slot alone");
$copy->safe_psql('postgres', q{
	SELECT concord.drop_node('cp2');
	SELECT concord.create_node('cp3', 'dbname=postgres');
	TRUNCATE t;
});
is($copy->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'this node',
	'the copy is a node of its own now');
$copy->safe_psql('postgres',
	"SELECT concord.create_subscription('sub_cp3_cp1', " . quote_literal($a->connstr('postgres')) . ')');
ok($copy->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status}),
	'and subscribes like any new node');
ok($copy->poll_query_until('postgres', 'SELECT count(*) = 210 FROM t'), 'with every row copied');
$copy->stop;

# The original without its marker (as after pg_upgrade): refused, until
# the operator reclaims the identity.
my $marker = $b->safe_psql('postgres', 'SELECT marker_slot FROM concord.node_identity');
$b->safe_psql('postgres', "SELECT pg_drop_replication_slot('$marker')");
ok($b->poll_query_until('postgres',
		q{SELECT status = 'down' AND last_error LIKE 'this database is a copy%' FROM concord.subscription_status}),
	'without its marker, the node stops as a copy would');
$b->safe_psql('postgres', "INSERT INTO t VALUES (999, 'unmarked')");
ok($a->poll_query_until('postgres',
		q{SELECT status = 'down' AND last_error LIKE '%the provider database is a copy of node "cp2"%'
		    FROM concord.subscription_status}),
	'as a provider it refuses to stream, and its subscriber shows why');
is($a->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 999'), '0',
	'nothing it wrote meanwhile was shipped as the node');
$b->safe_psql('postgres', 'SELECT concord.reclaim_node_identity()');
is($b->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'this node',
	'reclaim_node_identity() makes it the node again');
$a->safe_psql('postgres', "INSERT INTO t VALUES (1000, 'after')");
wait_for_apply_all([ $a, $b ]);
is($b->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1000'), 'after', 'and it replicates');
is($a->safe_psql('postgres', 'SELECT v FROM t WHERE id = 999'), 'unmarked',
	'both ways: its subscriber catches up once it is the node again');

done_testing();
