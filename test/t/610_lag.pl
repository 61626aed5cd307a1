# The lag views: concord.subscription_lag and concord.replication_lag.
#
# n2 applies n1's changes 2 seconds late (apply_delay).  After 20
# one-row transactions on n1:
#   - subscription_lag on n2 counts 20 transactions, and every percentile
#     is at least the 2 seconds of delay (apply commits after them), and
#     in order (p50 <= p90 <= p99 <= max);
#   - subscription_lag on n1 (nothing applied) counts 0, percentiles NULL;
#   - replication_lag on n2 shows n1 caught up, lag 0, once the stream is
#     idle (the provider's keepalives are the heartbeat); with the
#     subscription disabled and a new write on n1, n1 is not caught up and
#     the lag is the age of the latest transaction applied; enabled
#     again, it is caught up again;
#   - on n3, which holds n1's transactions 10 s (apply_delay), n1 is not
#     caught up while n3 holds one it received, and is once it applied it;
#     meanwhile subscription_status shows lag_bytes > 0 and a lag (the held
#     transaction counts as received, not applied;
#     before, the view showed lag_bytes 0 and lag 0 while it was held), and
#     0 once it applied it.
# No assertion depends on how fast the machine is: only lower bounds that
# the delay guarantees, and states the test waits for.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2);
run_on_all([ $n1, $n2 ], 'CREATE TABLE t (id int PRIMARY KEY, v text)');
add_tables([ $n1, $n2 ], ['t']);
subscribe($n2, $n1, apply_delay => '2s');
subscribe($n1, $n2);
wait_replicating([ $n1, $n2 ], 'mesh');
wait_sync_complete([ $n1, $n2 ]);

$n1->safe_psql('postgres', "INSERT INTO t VALUES ($_, 'v')") foreach 1 .. 20;
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1), 'n2 applied the 20 transactions');

is($n2->safe_psql('postgres', q{
	SELECT transactions, p50 >= '2s', p50 <= p90 AND p90 <= p99 AND p99 <= max
	  FROM concord.subscription_lag WHERE subscription_name = 'sub_n2_n1'}),
	'20|t|t', 'subscription_lag: 20 transactions, each applied at least 2 s after its commit');
is($n1->safe_psql('postgres', q{
	SELECT transactions, p50 IS NULL AND max IS NULL
	  FROM concord.subscription_lag WHERE subscription_name = 'sub_n1_n2'}),
	'0|t', 'subscription_lag: nothing applied, no percentiles');

ok($n2->poll_query_until('postgres', q{
	SELECT caught_up AND lag = '0' FROM concord.replication_lag WHERE origin_node = 'n1'}),
	'replication_lag: n1 caught up, no lag, while it writes nothing')
  or diag($n2->safe_psql('postgres', 'SELECT * FROM concord.replication_lag'));
is($n2->safe_psql('postgres', q{
	SELECT last_commit_ts = (SELECT max(pg_xact_commit_timestamp(xmin)) FROM t)
	  FROM concord.replication_lag WHERE origin_node = 'n1'}),
	't', "replication_lag: the latest transaction applied is n1's last insert");

link_down($n2, $n1);
$n1->safe_psql('postgres', "INSERT INTO t VALUES (21, 'late')");
is($n2->safe_psql('postgres', q{
	SELECT NOT caught_up AND lag > '0' AND lag >= now() - last_commit_ts - interval '1 min'
	  FROM concord.replication_lag WHERE origin_node = 'n1'}),
	't', 'replication_lag: with the subscription disabled, n1 is behind by the age of its latest transaction here');
link_up($n2, $n1);
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1), 'n2 applied the late row');
is($n2->safe_psql('postgres', q{
	SELECT transactions FROM concord.subscription_lag WHERE subscription_name = 'sub_n2_n1'}),
	'21', 'subscription_lag: the late transaction counts too');

# Busy: n3 holds every transaction of n1 for 10 s (apply_delay); while it
# holds one it has received, n1 is not caught up on n3, then it is.
my $n3 = concord_node('n3');
$n3->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY, v text)');
add_tables([$n3], ['t']);
subscribe($n3, $n1, apply_delay => '10s');
wait_replicating([$n3], 'n3');
wait_sync_complete([$n3]);
ok($n3->poll_query_until('postgres', q{
	SELECT caught_up FROM concord.replication_lag WHERE origin_node = 'n1'}),
	'replication_lag on n3: caught up after the copy');
$n1->safe_psql('postgres', "INSERT INTO t VALUES (22, 'held')");
ok($n3->poll_query_until('postgres', q{
	SELECT NOT caught_up AND lag > '0' FROM concord.replication_lag WHERE origin_node = 'n1'}),
	'replication_lag on n3: behind while it holds a transaction it received');
ok($n3->poll_query_until('postgres', q{
	SELECT lag_bytes > 0 AND lag > '0'
	  FROM concord.subscription_status WHERE subscription_name = 'sub_n3_n1'}),
	'subscription_status on n3: lag_bytes counts the WAL received and not applied')
  or diag($n3->safe_psql('postgres', 'SELECT * FROM concord.subscription_status'));
ok($n3->poll_query_until('postgres', q{
	SELECT caught_up AND lag = '0' FROM concord.replication_lag WHERE origin_node = 'n1'}),
	'replication_lag on n3: caught up once it applied it');
ok($n3->poll_query_until('postgres', q{
	SELECT lag_bytes = 0 AND lag = '0' FROM concord.subscription_status WHERE subscription_name = 'sub_n3_n1'}),
	'subscription_status on n3: lag_bytes 0 once it applied it');
ok($n2->poll_query_until('postgres', q{
	SELECT caught_up AND lag = '0' FROM concord.replication_lag WHERE origin_node = 'n1'}),
	'replication_lag: caught up again');

done_testing();
