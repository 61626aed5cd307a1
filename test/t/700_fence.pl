# concord.fence() (issue 13, the fence a live diff stands on): every
# transaction of a node that committed before the fence's fence_time is
# before its fence_lsn, so that once the other nodes hold the fence's
# token (wait_for_token), they hold every row version of that node older
# than fence_time: those versions have settled.
#
# Three nodes in a mesh, table t.
#  1. A transaction open on n1 holds the fence: with a short timeout it
#     fails, naming the transaction's process; with a longer one it waits
#     until that transaction ends, then returns.
#     1b. A commit waiting for a synchronous standby (stamped, in WAL, not
#     visible yet) holds the fence too; what fn1 shows right after the
#     fence returns of the rows older than it is what the other nodes hold
#     (without the wait, fn1 did not show yet the waiting row that the
#     others already held).
#  2. Under load (a writer on n1 committing one row per transaction until
#     the test tells it to stop), five fences in a row: after each, n2 and n3 hold the token
#     within its wait, and hold exactly the rows n1 holds whose commit
#     timestamp is before fence_time (the same ids), however many commits
#     were in flight when the fence was taken.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(3, prefix => 'fn');
my ($n1, $n2, $n3) = @nodes;
setup_mesh(\@nodes, 'CREATE TABLE t (id int PRIMARY KEY, v text);', ['t']);

# 1. An open transaction holds the fence.
my $open = $n1->background_psql('postgres');
my $open_pid = $open->query_safe('SELECT pg_backend_pid()');
$open->query_safe("BEGIN; INSERT INTO t VALUES (0, 'open')");
my ($ret, $out, $err) = $n1->psql('postgres', q{SELECT * FROM concord.fence('200ms')});
isnt($ret, 0, 'a fence with a short timeout fails while a transaction is open');
like($err, qr/concord.fence\(\) waited 00:00:00.2 for transaction \d+ to end/, 'it says what it waited for');
like($err, qr/DETAIL:  The transaction is that of process $open_pid;/, 'and names its process');

($ret, $out, $err) = $n1->psql('postgres', q{BEGIN; SELECT * FROM concord.fence('1s'); ROLLBACK;});
like($err, qr/concord.fence\(\) cannot run inside a transaction block or after a write of its transaction/,
	'a fence inside a transaction block is refused (its locks could hold up what it waits for)');
($ret, $out, $err) = $n1->psql('postgres',
	q{DO $$ BEGIN INSERT INTO t VALUES (-2, 'x'); PERFORM concord.fence('1s'); END $$;});
like($err, qr/cannot run inside a transaction block or after a write of its transaction/,
	'and so is one after a write of its transaction (a DO block)');

my $waiter = $n1->background_psql('postgres');
$waiter->query_until(qr/started/, "\\echo started\nSELECT fence_lsn IS NOT NULL AS fenced FROM concord.fence('1min');\n");
ok($n1->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE query LIKE 'SELECT fence_lsn%' AND state = 'active' AND wait_event_type = 'Extension')}),
	'a fence with a longer timeout waits for the open transaction');
$open->query_safe('COMMIT');
$open->quit;
ok($n1->poll_query_until('postgres', q{
		SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE 'SELECT fence_lsn%' AND state = 'active')}),
	'it returns once that transaction ended');
$waiter->quit;
wait_for_apply_all(\@nodes, label => 'the open transaction applied');

# 1b. A commit that waits for a synchronous standby has its commit
# timestamp and its commit record, and is not visible yet: the fence must
# wait for it, or fn1 would not show a row the others already hold and
# that is older than the fence.
$n1->safe_psql('postgres',
	"ALTER SYSTEM SET synchronous_standby_names = 'nobody'; SELECT pg_reload_conf()");
my $syncwait = start_psql($n1, "SET synchronous_commit = on;\nINSERT INTO t VALUES (-1, 'waits for a standby');\n");
ok($n1->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE query LIKE 'INSERT INTO t VALUES (-1%' AND wait_event = 'SyncRep')}),
	'a commit waits for a synchronous standby');
my $sync_pid = $n1->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t VALUES (-1%'});
($ret, $out, $err) = $n1->psql('postgres', q{SELECT * FROM concord.fence('200ms')});
like($err, qr/DETAIL:  The transaction is that of process $sync_pid;/, 'the fence waits for it');
# What fn1 shows right after the fence returns, in the same session.
my $fencing = start_psql($n1, q{SELECT fence_time AS ft, token AS tk FROM concord.fence(NULL) \gset
SELECT :'ft' || '|' || :'tk' || '|' || (SELECT count(*) || ':' || coalesce(sum(id), 0) FROM t
                                         WHERE pg_xact_commit_timestamp(xmin) < :'ft');
});
ok($n1->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE query LIKE 'SELECT fence_time%' AND wait_event_type = 'Extension')}),
	'a fence without a timeout waits for the commit');
$n1->safe_psql('postgres', 'ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf()');
my ($frc, $fout, $ferr) = finish_psql($fencing);
is($frc, 0, 'the fence returns once the commit is done') or diag($ferr);
chomp $fout;
my ($sync_fence_time, $sync_token, $sync_on_n1) = split /\|/, $fout;
finish_psql($syncwait);

# 2. Under load.
$n1->safe_psql('postgres', q{
	CREATE TABLE stop_writing (stop boolean);	-- fn1's own, not replicated
	CREATE PROCEDURE write_rows() LANGUAGE plpgsql AS $$
	DECLARE
		i int := 0;
	BEGIN
		LOOP
			EXIT WHEN EXISTS (SELECT FROM stop_writing);
			i := i + 1;
			INSERT INTO t VALUES (i, 'load');
			COMMIT;
		END LOOP;
	END $$;});
my $writer = start_psql($n1, "CALL write_rows();\n");
ok($n1->poll_query_until('postgres', 'SELECT count(*) > 200 FROM t'), 'the writer on fn1 runs');

# The ids of $node's rows whose commit timestamp is before $ts.
sub settled_ids
{
	my ($node, $ts) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) || ':' || coalesce(sum(id), 0) FROM t
		 WHERE pg_xact_commit_timestamp(xmin) < '$ts'});
}

foreach my $n ($n2, $n3)
{
	is($n->safe_psql('postgres', "SELECT concord.wait_for_token('$sync_token', '1min')"), 't',
		$n->name . ' holds the fence taken during the commit');
	is(settled_ids($n, $sync_fence_time), $sync_on_n1,
		$n->name . ' holds the rows of fn1 older than that fence that fn1 showed once it returned');
}

my $checked = 0;
foreach my $round (1 .. 5)
{
	my ($fence_time, $token) = split /\|/, $n1->safe_psql('postgres',
		q{SELECT fence_time, token FROM concord.fence()});
	my $on_n1 = settled_ids($n1, $fence_time);
	foreach my $n ($n2, $n3)
	{
		is($n->safe_psql('postgres', "SELECT concord.wait_for_token('$token', '1min')"), 't',
			"round $round: " . $n->name . ' holds the fence of fn1');
		is(settled_ids($n, $fence_time), $on_n1,
			"round $round: " . $n->name . " holds every row of fn1 older than the fence ($on_n1)");
	}
	$checked++ if $on_n1 !~ /^0:/;
}
is($checked, 5, 'every fence had rows of fn1 older than it to check');
is($n1->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CALL write_rows%' AND state = 'active'}),
	'1', 'the writer ran all along');
$n1->safe_psql('postgres', 'INSERT INTO stop_writing VALUES (true)');
my ($rc) = finish_psql($writer);
is($rc, 0, 'the writer stopped when asked');
wait_for_apply_all(\@nodes, label => 'the writer finished');
checksums_match(\@nodes, ['t'], 'after the load');

done_testing();
