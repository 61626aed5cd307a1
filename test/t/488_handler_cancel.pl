# An operator's cancel of the apply worker while a conflict handler runs
# is not the handler's timeout (review #27).  Both are query cancels
# (SQLSTATE 57014); the handler's timeout skips the change (the history
# says why), an operator's cancel must stop the apply transaction, which
# is retried as a whole.  Before, apply told them apart by the clock: a
# cancel that came after concord.handler_timeout had passed counted as
# the timeout, so a handler that caught its timeout and went on, then was
# cancelled by an operator, lost the change (skipped, with "canceling
# statement due to user request" in the history), and the nodes differed.
#
# n2 subscribes to n1; table t under a custom handler for insert_exists
# that sleeps past concord.handler_timeout (500 ms), catches the cancel,
# then waits for an advisory lock a session of the test holds.  n2 inserts
# key 1, then n1 inserts it: on n2 the handler runs, times out, goes on,
# and waits.  The test cancels the apply worker with pg_cancel_backend.
# Pass: no history row says "user request", the subscription's last_error
# does (the transaction is retried), and once the lock is released the
# handler's row is applied (the remote one), with one history row.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2, extra_conf => "concord.handler_timeout = 500");
run_on_all([ $n1, $n2 ], 'CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)');
add_tables([ $n1, $n2 ], ['t']);
$n2->safe_psql('postgres', q{
	CREATE FUNCTION public.slow(l public.t, r public.t, i concord.conflict_info)
	RETURNS public.t LANGUAGE plpgsql AS $$
	BEGIN
		BEGIN
			PERFORM pg_sleep(60);
		EXCEPTION WHEN query_canceled THEN
			NULL;	-- its own timeout: it goes on
		END;
		PERFORM pg_advisory_xact_lock(4242);
		RETURN r;
	END $$;
	SELECT concord.set_conflict_resolver('t', 'custom',
		'public.slow(public.t, public.t, concord.conflict_info)',
		conflict_type => 'insert_exists');});
subscribe($n2, $n1);
wait_replicating([ $n2 ], 'n2 subscribes to n1');

my $holder = $n2->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$n2->safe_psql('postgres', "INSERT INTO t VALUES (1, 'local')");
$n1->safe_psql('postgres', "INSERT INTO t VALUES (1, 'remote')");

ok( $n2->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		                WHERE a.backend_type = 'concord apply' AND l.locktype = 'advisory'
		                  AND NOT l.granted)}),
	'the handler outlived its timeout and waits for the lock');
my $pid = $n2->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'concord apply'});
is($n2->safe_psql('postgres', "SELECT pg_cancel_backend($pid)"), 't', 'the operator cancels the apply worker');

ok( $n2->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM concord.conflict_history WHERE error_message LIKE '%user request%')
		    OR EXISTS (SELECT FROM concord.subscription_status WHERE last_error LIKE '%user request%')}),
	'the cancel ended the handler');
is($n2->safe_psql('postgres',
		q{SELECT count(*) FROM concord.conflict_history WHERE error_message LIKE '%user request%'}),
	'0', "the operator's cancel did not skip the change")
  or diag(conflict_history_of($n2));
is($n2->safe_psql('postgres',
		q{SELECT last_error LIKE '%canceling statement due to user request%' FROM concord.subscription_status}),
	't', 'the apply transaction failed with the cancel, to be retried');

$holder->quit;
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1), 'n2 applied the retried transaction');
is($n2->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'remote', "n2 holds the handler's row");
is($n2->safe_psql('postgres', q{SELECT count(*) FROM concord.conflict_history WHERE key ->> 'id' = '1'}),
	'1', 'one history row for key 1')
  or diag(conflict_history_of($n2));

done_testing();
