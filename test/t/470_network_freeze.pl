# A network that stops passing bytes on open connections while new ones
# pass (a firewall or NAT that forgot its flows).  Before, both
# subscriptions of a two-node mesh kept showing 'replicating' with no lag,
# and never reconnected: the nodes stayed apart for good.
#
# Both nodes subscribe to each other through proxies of the test's own.
# Under write load on both nodes, the proxies freeze every open connection.
# Each subscription must then be 'down' within concord.receive_timeout
# (plus the retry's backoff), come back on its own through a new
# connection, and the nodes end with the same rows, every one written.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordProxy;
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A short receive timeout for the subscribers; the providers' walsenders
# drop their side after wal_sender_timeout, so the slot is free again.
my $conf = "concord.receive_timeout = '4s'\nwal_sender_timeout = '4s'";
my ($a, $b) = concord_nodes(2, prefix => 'frz', extra_conf => $conf);
run_on_all([ $a, $b ], 'CREATE TABLE t (id int PRIMARY KEY, v text);');
add_tables([ $a, $b ], ['t']);
my $pa = ConcordProxy->new($a);
my $pb = ConcordProxy->new($b);
subscribe($b, $a, dsn => $pa->connstr('postgres'));
subscribe($a, $b, dsn => $pb->connstr('postgres'));
wait_replicating([ $a, $b ], 'mesh through the proxies');

# Writes on both nodes, before, during and after the freeze.
my $next = { frz1 => 0, frz2 => 0 };
sub write_rows
{
	my ($n) = @_;
	my $base = $n->name eq 'frz1' ? 0 : 1_000_000;
	my $from = $base + $next->{ $n->name } + 1;
	my $to = $from + 49;
	$n->safe_psql('postgres',
		"INSERT INTO t SELECT g, '" . $n->name . "' FROM generate_series($from, $to) g");
	$next->{ $n->name } += 50;
	return;
}
write_rows($_) foreach ($a, $b);
wait_for_apply_all([ $a, $b ]);

$pa->freeze;
$pb->freeze;
write_rows($_) foreach ($a, $b, $a, $b);

foreach my $n ($a, $b)
{
	ok($n->poll_query_until('postgres',
			q{SELECT status = 'down' AND last_error LIKE '%taken as dead%' FROM concord.subscription_status}),
		$n->name . ': the frozen stream shows down, with why')
	  or diag($n->safe_psql('postgres',
		'SELECT status, last_error, last_msg_at, now() FROM concord.subscription_status'));
}

# New connections pass: both come back on their own, and catch up.
write_rows($_) foreach ($a, $b);
foreach my $n ($a, $b)
{
	ok($n->poll_query_until('postgres',
			q{SELECT status = 'replicating' FROM concord.subscription_status}),
		$n->name . ': the subscription reconnects by itself')
	  or diag($n->safe_psql('postgres', 'SELECT status, last_error FROM concord.subscription_status'));
}
wait_for_apply_all([ $a, $b ]);
my $want = 2 * 50 * 4;
is($a->safe_psql('postgres', 'SELECT count(*) FROM t'), $want, 'frz1 holds every row written');
checksums_match([ $a, $b ], ['t'], 'after the freeze');
ok($a->safe_psql('postgres',
		q{SELECT last_msg_at > now() - interval '1 minute' FROM concord.subscription_status}) eq 't',
	'last_msg_at shows a recent message');

$pa->stop;
$pb->stop;
done_testing();
