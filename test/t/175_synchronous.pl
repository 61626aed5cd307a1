# Synchronous replication to concord peers: synchronous_standby_names on
# a provider lists its subscribers' subscription names (the apply worker's
# application_name).  Before, a commit waiting for a concord peer took
# about a second (the peer reported once a second); now the peer reports a
# commit its provider may wait for as soon as it is applied (written and
# applied at once, flushed once its WAL is).  Checked here without timing:
#
#  1. remote_apply: the row is visible on the peer when the commit returns;
#  2. on: the commit returns, and pg_stat_replication and
#     concord.subscriber_status show the peer sync;
#  3. with the only synchronous peer disabled, a commit waits (SyncRep),
#     and returns once the subscription is enabled again;
#  4. ANY 1 (s1, s2): with s1's server stopped, then with s1 disabled,
#     commits go on; with both disabled a commit waits until s2 is back;
#  5. clearing synchronous_standby_names releases a waiting commit (the way
#     out when a synchronous peer is lost); FIRST 1 moves to the second peer
#     when the first is disabled; a dropped synchronous peer is waited for
#     until it leaves synchronous_standby_names;
#  6. a two-node mesh, each node the other's synchronous peer, committing
#     on both sides at once: nothing deadlocks (apply commits without
#     waiting for anyone).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($p, $s1, $s2) = map { concord_node($_) } qw(p s1 s2);
run_on_all([ $p, $s1, $s2 ], 'CREATE TABLE t (id int PRIMARY KEY, v text);');
add_tables([ $p, $s1, $s2 ], ['t']);
subscribe($s1, $p, name => 's1_from_p');
subscribe($s2, $p, name => 's2_from_p');
wait_replicating([ $s1, $s2 ], 's1 and s2 subscribe to p');

sub standby_names
{
	my ($node, $names) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET synchronous_standby_names = " . quote_literal($names) . "; SELECT pg_reload_conf();");
	return;
}

# Waits until the node's session pid waits for synchronous replication.
sub waits_for_sync_rep
{
	my ($node, $pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $pid");
}

# Disables a subscription and waits until its WAL sender on p is gone:
# the disable stops the apply worker asynchronously.
sub disable_peer
{
	my ($node, $sub) = @_;
	$node->safe_psql('postgres', "SELECT concord.alter_subscription_disable('$sub')");
	ok($p->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM pg_stat_replication WHERE application_name = '$sub'"),
		"$sub is disabled and no longer streams from p");
	return;
}

# --- 1. remote_apply ------------------------------------------------------------
standby_names($p, 's1_from_p');
ok($p->poll_query_until('postgres',
		q{SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 's1_from_p'}),
	"pg_stat_replication on p shows s1_from_p as its synchronous peer");
is($p->safe_psql('postgres',
		q{SELECT string_agg(subscription_name || '|' || state || '|' || sync_state, ',' ORDER BY subscription_name)
		    FROM concord.subscriber_status}),
	's1_from_p|streaming|sync,s2_from_p|streaming|async',
	'concord.subscriber_status on p: s1_from_p is synchronous, s2_from_p is not');
my $seen = 0;
foreach my $i (1 .. 20)
{
	$p->safe_psql('postgres', "SET synchronous_commit = remote_apply; INSERT INTO t VALUES ($i, 'ra')");
	$seen++ if $s1->safe_psql('postgres', "SELECT count(*) FROM t WHERE id = $i") eq '1';
}
is($seen, 20, 'remote_apply: each row is visible on s1 when its commit returns');

# --- 2. on ------------------------------------------------------------------------
$p->safe_psql('postgres', "SET synchronous_commit = on; INSERT INTO t SELECT g, 'on' FROM generate_series(21, 30) g");
ok(wait_for_apply_one($s1, 's1_from_p', $p), 'synchronous_commit on: the commit returned and s1 has it');

# --- 3. the only synchronous peer disabled -------------------------------------------
disable_peer($s1, 's1_from_p');
my $bg = $p->background_psql('postgres');
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/started/, "\\echo started\nINSERT INTO t VALUES (31, 'waits');\n\\echo inserted\n");
ok(waits_for_sync_rep($p, $pid), 'with s1_from_p disabled, a commit on p waits for it');
$s1->safe_psql('postgres', "SELECT concord.alter_subscription_enable('s1_from_p')");
ok($p->poll_query_until('postgres', "SELECT wait_event IS DISTINCT FROM 'SyncRep' FROM pg_stat_activity WHERE pid = $pid"),
	'the commit returns once s1_from_p is enabled again');
ok($s1->poll_query_until('postgres', 'SELECT count(*) = 1 FROM t WHERE id = 31'), 's1 has the row');

# --- 4. ANY 1 (s1, s2) ---------------------------------------------------------------
standby_names($p, 'ANY 1 (s1_from_p, s2_from_p)');
ok($p->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM pg_stat_replication WHERE sync_state = 'quorum'}),
	'ANY 1: both peers are quorum peers');
$s1->stop('immediate');
$p->safe_psql('postgres', "INSERT INTO t VALUES (32, 'any, s1 stopped')");
ok(wait_for_apply_one($s2, 's2_from_p', $p), 'ANY 1 with the server of s1 stopped: commits go on, s2 has them');
$s1->start;
ok($s1->poll_query_until('postgres', 'SELECT count(*) = 1 FROM t WHERE id = 32'),
	's1 catches up once started again');
disable_peer($s1, 's1_from_p');
$p->safe_psql('postgres', "INSERT INTO t SELECT g, 'any' FROM generate_series(33, 40) g");
ok(wait_for_apply_one($s2, 's2_from_p', $p), 'ANY 1 with s1 disabled: commits go on, s2 has them');
disable_peer($s2, 's2_from_p');
$bg->query_until(qr/started/, "\\echo started\nINSERT INTO t VALUES (41, 'waits');\n");
ok(waits_for_sync_rep($p, $pid), 'ANY 1 with both disabled: a commit waits');
$s2->safe_psql('postgres', "SELECT concord.alter_subscription_enable('s2_from_p')");
ok($p->poll_query_until('postgres', "SELECT wait_event IS DISTINCT FROM 'SyncRep' FROM pg_stat_activity WHERE pid = $pid"),
	'the commit returns once s2_from_p is back');

# --- 5. the way out: no synchronous peer ------------------------------------------------
standby_names($p, 's1_from_p');
ok($p->poll_query_until('postgres',
		q{SELECT sync_state = 'async' FROM pg_stat_replication WHERE application_name = 's2_from_p'}),
	"s2_from_p's WAL sender has taken the new setting: it is no longer waited for");
$bg->query_until(qr/started/, "\\echo started\nINSERT INTO t VALUES (42, 'waits');\n");
ok(waits_for_sync_rep($p, $pid), 'with s1_from_p disabled again, a commit waits');
standby_names($p, '');
ok($p->poll_query_until('postgres', "SELECT wait_event IS DISTINCT FROM 'SyncRep' FROM pg_stat_activity WHERE pid = $pid"),
	'clearing synchronous_standby_names releases it');
$bg->quit;
$s1->safe_psql('postgres', "SELECT concord.alter_subscription_enable('s1_from_p')");
wait_for_apply_all([ $s1, $s2 ], label => 'after the waits');
is($s1->safe_psql('postgres', 'SELECT count(*) FROM t'), '42', 's1 has every row');
is($s2->safe_psql('postgres', 'SELECT count(*) FROM t'), '42', 's2 has every row');

# --- 5b. FIRST 1, and a synchronous peer dropped -----------------------------------------
standby_names($p, 'FIRST 1 (s1_from_p, s2_from_p)');
ok($p->poll_query_until('postgres',
		q{SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY application_name) = 's1_from_p:sync,s2_from_p:potential'
		    FROM pg_stat_replication}),
	'FIRST 1: s1_from_p is the synchronous peer, s2_from_p the potential one')
  or diag($p->safe_psql('postgres', 'SELECT application_name, state, sync_priority, sync_state, flush_lsn FROM pg_stat_replication'));
disable_peer($s1, 's1_from_p');
$p->safe_psql('postgres', "INSERT INTO t VALUES (43, 'first')");
ok(wait_for_apply_one($s2, 's2_from_p', $p), 'FIRST 1 with s1 disabled: s2 takes over, commits go on');
$s1->safe_psql('postgres', "SELECT concord.alter_subscription_enable('s1_from_p')");
standby_names($p, 's2_from_p');
ok($p->poll_query_until('postgres',
		q{SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 's2_from_p'}),
	's2_from_p alone is the synchronous peer');
ok($p->poll_query_until('postgres',
		q{SELECT sync_state = 'async' FROM pg_stat_replication WHERE application_name = 's1_from_p'}),
	"s1_from_p's WAL sender has taken the new setting: it is no longer waited for");
$s2->safe_psql('postgres', "SELECT concord.drop_subscription('s2_from_p')");
$bg = $p->background_psql('postgres');
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/started/, "\\echo started\nINSERT INTO t VALUES (44, 'waits');\n");
ok(waits_for_sync_rep($p, $pid), 'with the synchronous peer dropped, a commit waits');
standby_names($p, '');
ok($p->poll_query_until('postgres', "SELECT wait_event IS DISTINCT FROM 'SyncRep' FROM pg_stat_activity WHERE pid = $pid"),
	'clearing synchronous_standby_names releases it');
$bg->quit;
ok($s1->poll_query_until('postgres', 'SELECT count(*) = 44 FROM t'), 's1 has every row');

# --- 6. a mesh, synchronous both ways ------------------------------------------------------
my ($a, $b) = map { concord_node($_) } qw(ma mb);
run_on_all([ $a, $b ], 'CREATE TABLE m (id int PRIMARY KEY, v text);');
add_tables([ $a, $b ], ['m']);
subscribe($a, $b, name => 'ma_from_mb', synchronize_data => 0);
subscribe($b, $a, name => 'mb_from_ma', synchronize_data => 0);
wait_replicating([ $a, $b ], 'mesh ma, mb');
standby_names($a, 'mb_from_ma');
standby_names($b, 'ma_from_mb');
my @writers;
foreach my $n ($a, $b)
{
	my $base = $n == $a ? 0 : 1000;
	push @writers, start_psql($n, join('', map {
		"SET synchronous_commit = remote_apply; INSERT INTO m VALUES (" . ($base + $_) . ", '" . $n->name . "');\n"
	} 1 .. 50));
}
ok($a->poll_query_until('postgres',
		q{SELECT subscription_name || '|' || subscriber_node || '|' || sync_state = 'mb_from_ma|mb|sync'
		    FROM concord.subscriber_status}),
	'concord.subscriber_status on ma names the subscriber node of its synchronous peer');
ok($b->poll_query_until('postgres',
		q{SELECT sync_state = 'sync' FROM concord.subscriber_status}),
	'and mb waits for ma_from_mb');
my @rc = map { (finish_psql($_))[0] } @writers;
is("@rc", '0 0', 'both nodes committed 50 synchronous transactions at once: no deadlock');
foreach my $n ($a, $b)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM m'), '100', $n->name . ' has all 100 rows');
}

done_testing();
