# concord.wait_for_apply without a timeout ends when its subscription is
# dropped meanwhile (it waited forever before): a session waits for a
# position the provider will never reach, another drops the subscription;
# the waiter gets an ERROR naming the subscription, and returns.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2);
run_on_all([ $n1, $n2 ], 'CREATE TABLE w (id int PRIMARY KEY);');
add_tables([ $n1, $n2 ], ['w']);
subscribe($n2, $n1);
wait_replicating([ $n2 ], 'subscribed');

my $waiter = $n2->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/waiting/, q{\echo waiting
SELECT concord.wait_for_apply('sub_n2_n1', 'FFFFFFFF/0', NULL);
});
ok($n2->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE query LIKE 'SELECT concord.wait_for_apply%' AND state = 'active'}),
	'a session waits for a position that never comes, without a timeout');
$n2->safe_psql('postgres', q{SELECT concord.drop_subscription('sub_n2_n1')});
ok($n2->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity
	WHERE query LIKE 'SELECT concord.wait_for_apply%' AND state = 'active'}),
	'the wait ends once the subscription is dropped');
$waiter->quit;
like($waiter->{stderr}, qr/subscription "sub_n2_n1" was dropped while waiting for it/,
	'the waiter gets an ERROR naming the subscription');

done_testing();
