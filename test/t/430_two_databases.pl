# Two databases of one server are two nodes, and subscriptions of the same
# name in both are separate subscriptions (review #3).  Replication origins
# are shared by every database of a server; a subscription's id names its
# origins, and it was a hash of the name, the same in every database: the
# two subscriptions shared origins and progress.
#
#  - da subscribes 'sub' to p1, db subscribes 'sub' to p2, whose WAL is far
#    ahead of p1's: da must still receive everything p1 writes (it started
#    from p2's position on p1, skipping p1's transactions);
#  - dc subscribes 'sub' to p1 too: both da and dc replicate (they needed
#    the same origin at once);
#  - dropping db's 'sub' leaves the others' origins and progress alone.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $p1 = concord_node('p1');
my $p2 = concord_node('p2');
run_on_all([ $p1, $p2 ], 'CREATE TABLE t (id int PRIMARY KEY, v text);');
add_tables([ $p1, $p2 ], ['t']);

# p2's WAL far ahead of p1's
$p2->safe_psql('postgres',
	"CREATE TABLE filler (x text); INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)");
ok($p2->safe_psql('postgres', 'SELECT pg_current_wal_lsn()') gt
	$p1->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'), "p2's WAL is ahead of p1's")
  or diag('p1 ' . $p1->safe_psql('postgres', 'SELECT pg_current_wal_lsn()')
	  . ' p2 ' . $p2->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'));

my $s = concord_node('multi', extension => 0);
my %prov = (da => $p1, db => $p2, dc => $p1);
foreach my $d (sort keys %prov)
{
	$s->safe_psql('postgres', "CREATE DATABASE $d");
	my $dsn = quote_literal($s->connstr($d));
	my $pdsn = quote_literal($prov{$d}->connstr('postgres'));
	$s->safe_psql($d,
		"CREATE EXTENSION concord;
		 SELECT concord.create_node('node_$d', $dsn);
		 CREATE TABLE t (id int PRIMARY KEY, v text);
		 SELECT concord.create_subscription('sub', $pdsn);");
}
foreach my $d (sort keys %prov)
{
	ok($s->poll_query_until($d,
			q{SELECT status = 'replicating' FROM concord.subscription_status}),
		"$d: its subscription 'sub' replicates")
	  or diag($s->safe_psql($d, 'SELECT status, last_error FROM concord.subscription_status'));
}
is($s->safe_psql('postgres',
		q{SELECT count(DISTINCT split_part(roname, '_', 2)) FROM pg_replication_origin
		   WHERE roname LIKE 'concord\_%'}),
	'3', 'the three subscriptions named sub have three ids, so three sets of origins');

$p1->safe_psql('postgres', "INSERT INTO t SELECT g, 'p1' FROM generate_series(1, 50) g");
$p2->safe_psql('postgres', "INSERT INTO t SELECT g, 'p2' FROM generate_series(1, 30) g");
my %want = (da => '50|p1', db => '30|p2', dc => '50|p1');
foreach my $d (sort keys %prov)
{
	ok($s->poll_query_until($d,
			"SELECT count(*) || '|' || min(v) = '$want{$d}' FROM t"),
		"$d holds exactly what its provider wrote")
	  or diag($s->safe_psql($d, "SELECT count(*), min(v), max(v) FROM t"));
}

# Dropping db's sub leaves da's and dc's origins, and they go on.
$s->safe_psql('db', q{SELECT concord.drop_subscription('sub')});
$p1->safe_psql('postgres', "INSERT INTO t SELECT g, 'p1' FROM generate_series(51, 60) g");
foreach my $d (qw(da dc))
{
	ok($s->poll_query_until($d, "SELECT count(*) = 60 FROM t"),
		"$d goes on after db dropped its subscription of the same name");
}
is($s->safe_psql('postgres',
		q{SELECT count(DISTINCT split_part(roname, '_', 2)) FROM pg_replication_origin
		   WHERE roname LIKE 'concord\_%'}),
	'2', "db's drop removed its own origins only");

done_testing();
