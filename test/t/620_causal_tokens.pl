# Causal tokens: concord.causal_token() and concord.wait_for_token().
#
# A mesh n1, n2, n3, where n3 applies n1's changes 10 s late
# (apply_delay):
#   - a token taken on n1 right after a write names n1 at its commit;
#     waited for on n2 it is true and the row is there; on n3 it is false
#     after a 1 s timeout (the delay holds the row), then true, with the
#     row, once n3 applied it;
#   - monotonic reads: a token taken on n2 after reading n1's row names
#     n1 at least as far; waited for on n3 it covers that row;
#   - malformed tokens, a REPEATABLE READ transaction: errors; a node this
#     node hears nothing of: false at the timeout; a node that departed
#     (drop_peer): satisfied.
# A ring n4 -> n5 -> n6 -> n4 (forward_origins '{all}'):
#   - a token taken on n4 is satisfied on n6, which receives n4's changes
#     only through n5, and the row is there; n6's own token names n4 at
#     least as far (it learned n4's position from the forwarded commit);
#   - a token names the commits of sessions that wrote rows, a prepared
#     transaction's too (COMMIT PREPARED), not an ANALYZE, a CREATE TABLE
#     or writes of temporary and unlogged tables after them; after a write
#     of a table in no set, the token's MARK, passed on by n5, satisfies it
#     on n6: such a token is satisfied on n6 and the rows are there;
#   - n5 receives n6's changes forwarded by n4: after n5 is stopped with
#     -m immediate (a crash), a token taken on n5 either is refused (the
#     position was lost) or names n6 at least at the commit of the row n5
#     holds; after a clean restart it is made and names it; once n6
#     writes again, n5's token names it.
#   - a resynchronization on n5, which n6 receives forwarded as n4's:
#     n6 still makes tokens naming n4 as far as before.
# No assertion depends on timing except the 1 s timeout under a 10 s
# apply_delay.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

sub token_of
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT concord.causal_token()');
}

sub wait_token
{
	my ($node, $token, $timeout) = @_;
	return $node->safe_psql('postgres',
		'SELECT concord.wait_for_token(' . quote_literal($token) . ", '$timeout')");
}

# Whether token $a names node $n at least as far as LSN $lsn.
sub names_at_least
{
	my ($node, $token, $n, $lsn) = @_;
	return $node->safe_psql('postgres',
		'SELECT COALESCE((' . quote_literal($token) . "::jsonb ->> '$n')::pg_lsn >= '$lsn'::pg_lsn, false)");
}

my ($n1, $n2, $n3) = concord_nodes(3);
run_on_all([ $n1, $n2, $n3 ], 'CREATE TABLE t (id int PRIMARY KEY, v text)');
add_tables([ $n1, $n2, $n3 ], ['t']);
subscribe($n2, $n1);
subscribe($n1, $n2);
subscribe($n3, $n1, apply_delay => '10s');
subscribe($n1, $n3);
subscribe($n2, $n3);
subscribe($n3, $n2);
wait_replicating([ $n1, $n2, $n3 ], 'mesh');
wait_sync_complete([ $n1, $n2, $n3 ]);

# --- read your writes -----------------------------------------------------
my $before = $n1->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
$n1->safe_psql('postgres', "INSERT INTO t VALUES (1, 'one')");
my $t1 = token_of($n1);
note "token on n1: $t1";
my $after = $n1->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
is($n1->safe_psql('postgres',
	"SELECT ('$t1'::jsonb ->> 'n1')::pg_lsn BETWEEN '$before' AND '$after'"),
	't', "n1's token names n1 at the insert's commit");
# n3 first: its 10 s apply_delay holds the row at least that long.
is(wait_token($n3, $t1, '1s'), 'f', 'n3 (10 s apply_delay): not within 1 s');
is($n3->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 1'), '0',
	'n3: the row is not there yet');
is(wait_token($n2, $t1, '60s'), 't', 'n2: the token is satisfied');
is($n2->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'one',
	'n2: the row is there once the token is satisfied');
is(wait_token($n3, $t1, '60s'), 't', 'n3: satisfied once the delayed row is applied');
is($n3->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'one',
	'n3: the row is there');

# --- monotonic reads ------------------------------------------------------
$n1->safe_psql('postgres', "INSERT INTO t VALUES (2, 'two')");
my $t2 = token_of($n1);
is(wait_token($n2, $t2, '60s'), 't', 'n2 holds the second row');
my $t3 = token_of($n2);
note "token on n2: $t3";
is(names_at_least($n2, $t3, 'n1', ($n2->safe_psql('postgres', "SELECT '$t2'::jsonb ->> 'n1'"))),
	't', "n2's token names n1 at least as far as n1's did");
is(wait_token($n3, $t3, '60s'), 't', "n3: n2's token is satisfied");
is($n3->safe_psql('postgres', 'SELECT v FROM t WHERE id = 2'), 'two',
	'n3: the row read on n2 is there');

# --- bad input ------------------------------------------------------------
my ($rc, $out, $err) = $n2->psql('postgres', "SELECT concord.wait_for_token('garbage')");
like($err, qr/invalid causal token.*\n.*DETAIL:  It is not JSON.*\n.*HINT:  Pass a token returned by concord.causal_token/s,
	'not JSON: an error with a hint');
($rc, $out, $err) = $n2->psql('postgres', "SELECT concord.wait_for_token('[1]')");
like($err, qr/invalid causal token.*It is not a JSON object/s, 'not an object: an error');
($rc, $out, $err) = $n2->psql('postgres', q{SELECT concord.wait_for_token('{"n1": "xyz"}')});
like($err, qr/invalid causal token.*"xyz" is no WAL position/s, 'not a position: an error');
($rc, $out, $err) = $n2->psql('postgres', "SELECT concord.wait_for_token(NULL)");
like($err, qr/token must not be NULL|argument "token"/, 'NULL: an error');
($rc, $out, $err) = $n2->psql('postgres',
	"BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT concord.wait_for_token('$t1'); COMMIT");
like($err, qr/cannot be used in a REPEATABLE READ or SERIALIZABLE transaction/,
	'REPEATABLE READ: an error');
is($n2->safe_psql('postgres', q{SELECT concord.wait_for_token('{"elsewhere": "0/1"}', '200ms')}),
	'f', 'a node this node hears nothing of: false at the timeout');
is($n2->safe_psql('postgres', q{SELECT concord.wait_for_token('{}', '1s')}),
	't', 'an empty token: true at once');
# A node that left: nothing more of it will arrive.
$n2->safe_psql('postgres', "SELECT concord.drop_peer('n3')");
is($n2->safe_psql('postgres', q{SELECT concord.wait_for_token('{"n3": "FF/0"}', '5s')}),
	't', 'a node that departed (drop_peer): its entry is satisfied');

# --- a ring ---------------------------------------------------------------
my $n4 = concord_node('n4', extra_conf => 'max_prepared_transactions = 2');
my ($n5, $n6) = map { concord_node($_) } qw(n5 n6);
run_on_all([ $n4, $n5, $n6 ], 'CREATE TABLE r (id int PRIMARY KEY, v text)');
add_tables([ $n4, $n5, $n6 ], ['r']);
build_ring([ $n4, $n5, $n6 ]);
wait_replicating([ $n4, $n5, $n6 ], 'ring');
wait_sync_complete([ $n4, $n5, $n6 ]);

$n4->safe_psql('postgres', "INSERT INTO r VALUES (1, 'from n4')");
my $t4 = token_of($n4);
note "token on n4: $t4";
is(wait_token($n6, $t4, '60s'), 't', "n6: n4's token is satisfied through n5");
is($n6->safe_psql('postgres', 'SELECT v FROM r WHERE id = 1'), 'from n4',
	"n6: n4's row is there");
my $t6 = token_of($n6);
note "token on n6: $t6";
is(names_at_least($n6, $t6, 'n4', $n6->safe_psql('postgres', "SELECT '$t4'::jsonb ->> 'n4'")),
	't', "n6's token names n4 at least as far as n4's did (forwarded position)");

# What a token names of its node: the commits of sessions that wrote rows
# (a prepared transaction's too), not an ANALYZE or DDL after them, which
# never reach n6.
$n4->safe_psql('postgres', "INSERT INTO r VALUES (10, 'before analyze')");
$n4->safe_psql('postgres', 'ANALYZE r');
$n4->safe_psql('postgres', 'CREATE TABLE local_only (id int)');
is(wait_token($n6, token_of($n4), '60s'), 't',
	'n6: a token taken after ANALYZE and CREATE TABLE is satisfied');
is($n6->safe_psql('postgres', 'SELECT v FROM r WHERE id = 10'), 'before analyze',
	"n6: n4's row is there");
# Nor writes of temporary or unlogged tables after them.
$n4->safe_psql('postgres', "INSERT INTO r VALUES (12, 'before a temp table')");
$n4->safe_psql('postgres', q{
	CREATE TEMP TABLE scratch (i int);
	INSERT INTO scratch VALUES (1);
	CREATE UNLOGGED TABLE scratch_u (i int);
	INSERT INTO scratch_u VALUES (1);
	COPY scratch FROM PROGRAM 'echo 2';
	TRUNCATE scratch;});
is(wait_token($n6, token_of($n4), '30s'), 't',
	'n6: a token taken after writes of temporary and unlogged tables is satisfied');
is($n6->safe_psql('postgres', 'SELECT v FROM r WHERE id = 12'), 'before a temp table',
	"n6: n4's row is there");
# A write of a table in no set ships nothing: the token's MARK, passed on
# by n5, tells n6 how far it holds n4 (else n6 would wait for n4's next
# transaction that ships something).
$n4->safe_psql('postgres', 'INSERT INTO local_only VALUES (1)');
my $t_local = token_of($n4);
is(wait_token($n6, $t_local, '30s'), 't',
	'n6: a token taken after a write of a table in no set is satisfied (MARK through n5)');
is(wait_token($n5, $t_local, '30s'), 't', 'n5: too');
$n4->safe_psql('postgres', "BEGIN; INSERT INTO r VALUES (11, 'prepared'); PREPARE TRANSACTION 'p1'");
link_down($n5, $n4);
$n4->safe_psql('postgres', "COMMIT PREPARED 'p1'");
my $t_prepared = token_of($n4);
is(wait_token($n6, $t_prepared, '1s'), 'f',
	'n6: a token taken after COMMIT PREPARED waits for it (n5 does not apply n4 now)');
link_up($n5, $n4);
is(wait_token($n6, $t_prepared, '60s'), 't',
	'n6: a token taken after COMMIT PREPARED is satisfied');
is($n6->safe_psql('postgres', 'SELECT v FROM r WHERE id = 11'), 'prepared',
	'n6: the prepared transaction\'s row is there');

# n5 receives n6's changes forwarded by n4.
$n6->safe_psql('postgres', "INSERT INTO r VALUES (2, 'from n6')");
my $n6_end = $n6->safe_psql('postgres', "SELECT concord.causal_token()::jsonb ->> 'n6'");
is(wait_token($n5, token_of($n6), '60s'), 't', "n5: n6's token is satisfied through n4");
is(names_at_least($n5, token_of($n5), 'n6', $n6_end), 't',
	"n5's token names n6 at least at its commit");

foreach my $how ('immediate stop', 'clean restart')
{
	if ($how eq 'immediate stop')
	{
		$n5->stop('immediate');
		$n5->start;
	}
	else
	{
		$n5->restart;
	}
	($rc, $out, $err) = $n5->psql('postgres', 'SELECT concord.causal_token()');
	is($rc, 0, 'clean restart: n5 makes a token (the positions were saved at the stop)')
	  or diag($err)
	  if $how eq 'clean restart';
	if ($rc == 0)
	{
		is(names_at_least($n5, $out, 'n6', $n6_end), 't',
			"$how: n5's token names n6 at least at the commit of the row it holds");
	}
	else
	{
		like($err, qr/does not know what it holds of node "n6".*HINT:  Try again once/s,
			"$how: n5 refuses a token it cannot make exact");
	}
	wait_replicating([ $n4, $n5, $n6 ], "ring after $how");
	$n6->safe_psql('postgres', "INSERT INTO r VALUES (" . ($how eq 'immediate stop' ? 3 : 4) . ", 'again')");
	$n6_end = $n6->safe_psql('postgres', "SELECT concord.causal_token()::jsonb ->> 'n6'");
	is(wait_token($n5, token_of($n6), '60s'), 't', "$how: n5 holds n6's new row");
	is(names_at_least($n5, token_of($n5), 'n6', $n6_end), 't',
		"$how: n5's token names n6 at its new commit");
}
is($n4->safe_psql('postgres', 'SELECT count(*) FROM r'), '7', 'the ring converged: n4');
is($n5->safe_psql('postgres', 'SELECT count(*) FROM r'), '7', 'the ring converged: n5');

# A resynchronization on n5 copies r from n4 under n4's origin, and n6
# receives the copy forwarded: it holds no transaction of n4's, and n6
# still knows what it holds of n4 (it did not, and refused tokens).
my $n4_before = $n6->safe_psql('postgres', "SELECT concord.causal_token()::jsonb ->> 'n4'");
$n5->safe_psql('postgres',
	"SELECT concord.alter_subscription_resynchronize_table('sub_n5_n4', 'r')");
$n5->safe_psql('postgres', "SELECT concord.wait_for_subscription_sync_complete('sub_n5_n4')");
is(wait_token($n6, token_of($n5), '60s'), 't', "n6 applied what n5 holds, the copy too");
($rc, $out, $err) = $n6->psql('postgres', 'SELECT concord.causal_token()');
is($rc, 0, 'n6 makes a token after a forwarded copy') or diag($err);
is(names_at_least($n6, $out, 'n4', $n4_before), 't', "n6's token still names n4 as far");
is($n6->safe_psql('postgres', 'SELECT count(*) FROM r'), '7', 'n6 holds every row');

done_testing();
