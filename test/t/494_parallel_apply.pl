# Several apply workers per subscription
# (concord.apply_workers_per_subscription = 4: src/apply/parallel.h).
#
#  1. The leader starts its four workers; a reload with another number
#     restarts apply with that many.
#  2. Independent transactions run at the same time, yet commit in the
#     provider's order: a transaction blocked by a local row lock holds
#     back the commit of a later one that is already applied.
#  3. Two transactions touching the same key through different unique
#     indexes (an UPDATE moving an email from id 1, then an INSERT of
#     that email for id 2) are applied in order: no conflict, no error.
#     Twice: with the provider's default replica identity (the old email
#     is not sent: the UPDATE runs alone) and with REPLICA IDENTITY FULL
#     (the old email is a key of the UPDATE, which the INSERT waits for).
#     And an INSERT held back by a local lock, then a DELETE of its row
#     in a later transaction: the DELETE waits for it.
#  4. A deadlock between a local session and two workers (the local
#     session waits for the later worker's row, which waits for its turn
#     behind the earlier worker, which waits for the local session's
#     row) is found by the deadlock detector, and everything converges.
#  5. kill -9 of a worker that waits for its turn with its transaction
#     applied: after the crash every transaction is applied exactly once.
#  6. A random multi-client workload with INSERTs, UPDATEs and DELETEs of
#     shared keys, a table without a unique index, a big transaction cut
#     into chunks and a TRUNCATE converges, with no conflict recorded.
#  7. A subscription disabled while its workers hold transactions for
#     apply_delay and its leader waits for a free worker: it stops at once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = "concord.apply_workers_per_subscription = 4\ndeadlock_timeout = '200ms'";
my ($a, $b) = concord_nodes(2, prefix => 'pw', extra_conf => $conf);
my $ddl = q{
	CREATE TABLE p (id int PRIMARY KEY, v int NOT NULL DEFAULT 0, note text);
	CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, v int);
	CREATE TABLE uf (id int PRIMARY KEY, email text UNIQUE, v int);
	CREATE TABLE nk (a int, b text);
	ALTER TABLE nk REPLICA IDENTITY FULL;
	CREATE TABLE big (id int PRIMARY KEY, pad text);
};
run_on_all([ $a, $b ], $ddl);
$a->safe_psql('postgres', 'ALTER TABLE uf REPLICA IDENTITY FULL');
my @tables = ('p', 'u', 'uf', [ 'nk', 'a, b' ], 'big');
add_tables([ $a, $b ], [ 'p', 'u', 'uf', 'nk', 'big' ]);
$a->safe_psql('postgres', q{
	INSERT INTO p SELECT g, 0, 'pre' FROM generate_series(1, 100) g;
	INSERT INTO u VALUES (1, 'x1', 0);
	INSERT INTO uf VALUES (1, 'x1', 0);});
my $sub = subscribe($b, $a);
wait_replicating([$b], 'subscribed');
wait_for_apply_all([$b], label => 'initial copy');

# 1. The workers.
ok($b->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type = 'concord apply worker'}),
	'the leader runs four workers');

sub no_conflicts
{
	my ($label) = @_;
	is($b->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
		'0', "$label: no conflict recorded");
	return;
}

# 1b. A reload with another number of workers restarts apply with them.
$b->safe_psql('postgres',
	'ALTER SYSTEM SET concord.apply_workers_per_subscription = 2; SELECT pg_reload_conf()');
ok($b->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'concord apply worker'}),
	'after a reload with 2, the leader runs two workers');
$b->safe_psql('postgres',
	'ALTER SYSTEM RESET concord.apply_workers_per_subscription; SELECT pg_reload_conf()');
ok($b->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type = 'concord apply worker'}),
	'and four again after the setting is reset');
wait_replicating([$b], 'after the reloads');

# 2. Commit order with transactions applied at the same time.
my $holder = $b->background_psql('postgres');
$holder->query_safe('BEGIN; SELECT * FROM p WHERE id = 1 FOR UPDATE');
$a->safe_psql('postgres', "UPDATE p SET v = 1, note = 'first' WHERE id = 1");
$a->safe_psql('postgres', "INSERT INTO p VALUES (1001, 2, 'second')");
ok($b->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'}),
	'the first transaction waits for the local row lock');
ok($b->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted AND locktype = 'advisory' AND objsubid = 194}),
	'the second, applied meanwhile by another worker, waits for its turn to commit');
is($b->safe_psql('postgres', 'SELECT count(*) FROM p WHERE id = 1001'), '0',
	'the second is not visible before the first');
$holder->query_safe('COMMIT');
wait_for_apply_all([$b], label => 'commit order');
is($b->safe_psql('postgres', "SELECT string_agg(note, ',' ORDER BY id) FROM p WHERE id IN (1, 1001)"),
	'first,second', 'both applied once the lock is gone');

# 3. The same key through different unique indexes.
foreach my $t ('u', 'uf')
{
	$holder->query_safe("BEGIN; SELECT * FROM $t WHERE id = 1 FOR UPDATE");
	$a->safe_psql('postgres', "UPDATE $t SET email = 'x2' WHERE id = 1");
	$a->safe_psql('postgres', "INSERT INTO $t VALUES (2, 'x1', 0)");
	ok($b->poll_query_until('postgres',
			q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'}),
		"$t: the UPDATE waits for the local row lock");
	is($b->safe_psql('postgres', "SELECT count(*) FROM $t WHERE id = 2"), '0',
		"$t: the INSERT of the email it frees waits for it");
	$holder->query_safe('COMMIT');
	wait_for_apply_all([$b], label => "$t: same key");
	is($b->safe_psql('postgres', "SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM $t"),
		'1=x2,2=x1', "$t: both applied in order");
	no_conflicts("$t: same key through two indexes");
	is($b->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
		'replicating', "$t: the subscription replicates");
}

# 3b. A key's dependency: the first transaction, held back by a local
# row lock before it inserts row 140, and a second that deletes row 140.
# Without the dependency, the DELETE ran first, found no row (a
# delete_missing conflict) and row 140 stayed here.
$holder->query_safe('BEGIN; SELECT * FROM p WHERE id = 30 FOR UPDATE');
$a->safe_psql('postgres',
	"BEGIN; UPDATE p SET note = 'held' WHERE id = 30; INSERT INTO p VALUES (140, 0, 'inserted'); COMMIT;");
$a->safe_psql('postgres', 'DELETE FROM p WHERE id = 140');
$a->safe_psql('postgres', "INSERT INTO p VALUES (141, 0, 'independent')");
ok($b->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM pg_locks WHERE NOT granted AND locktype = 'advisory' AND objsubid = 194}),
	'an independent transaction waits for its turn, the DELETE for the INSERT');
$holder->query_safe('COMMIT');
wait_for_apply_all([$b], label => 'dependency');
is($b->safe_psql('postgres', "SELECT string_agg(id || '=' || note, ',' ORDER BY id) FROM p WHERE id IN (30, 140, 141)"),
	'30=held,141=independent', 'the DELETE of row 140 waited for its INSERT');
no_conflicts('dependency');

# 4. A deadlock through a local session: it holds row 10, which the
# earlier transaction waits for, then asks for row 11, which the later
# one holds while it waits for its turn behind the earlier one.
my $dl = $b->background_psql('postgres', on_error_stop => 0);
$dl->query_safe('BEGIN; SELECT * FROM p WHERE id = 10 FOR UPDATE');
$a->safe_psql('postgres', "UPDATE p SET v = 10, note = 'i' WHERE id = 10");
$a->safe_psql('postgres', "UPDATE p SET v = 11, note = 'j' WHERE id = 11");
ok($b->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted AND locktype = 'advisory' AND objsubid = 194}),
	'the later transaction holds its row and waits for its turn');
$dl->query('SELECT * FROM p WHERE id = 11 FOR UPDATE');
$dl->query('COMMIT');
$dl->quit;
wait_for_apply_all([$b], label => 'after the deadlock');
ok(slurp_file($b->logfile) =~ /deadlock detected|met a deadlock, starting again/,
	'the deadlock detector found the circle');
is($b->safe_psql('postgres', "SELECT string_agg(note, ',' ORDER BY id) FROM p WHERE id IN (10, 11)"),
	'i,j', 'both transactions applied after the deadlock');
checksums_match([ $a, $b ], \@tables, 'after the deadlock');

# 5. kill -9 of a worker waiting for its turn.
$holder->query_safe('BEGIN; SELECT * FROM p WHERE id = 20 FOR UPDATE');
$a->safe_psql('postgres', "UPDATE p SET v = 20, note = 'k1' WHERE id = 20");
$a->safe_psql('postgres', "INSERT INTO p VALUES (2001, 1, 'k2')");
$a->safe_psql('postgres', "INSERT INTO p VALUES (2002, 1, 'k3')");
ok($b->poll_query_until('postgres', 'SELECT waiting >= 2 FROM (SELECT count(*) AS waiting FROM pg_locks WHERE NOT granted AND locktype = \'advisory\' AND objsubid = 194) w'),
	'two later transactions are applied and wait for their turn');
my $victim = $b->safe_psql('postgres',
	q{SELECT pid FROM pg_locks WHERE NOT granted AND locktype = 'advisory' AND objsubid = 194 LIMIT 1});
kill 'KILL', $victim;
$holder->quit;
restart_after_crash($b);
wait_replicating([$b], 'after the crash');
wait_for_apply_all([$b], label => 'after the crash');
is($b->safe_psql('postgres', "SELECT string_agg(note, ',' ORDER BY id) FROM p WHERE id IN (20, 2001, 2002)"),
	'k1,k2,k3', 'every transaction applied after the crash');
no_conflicts('after the crash (nothing applied twice)');
checksums_match([ $a, $b ], \@tables, 'after the crash');

# 5b. A worker's error while others wait for their turn.
my $log_offset = -s $b->logfile;
$b->safe_psql('postgres', 'ALTER TABLE p ADD CONSTRAINT no_666 CHECK (v <> 666)');
my $holder2 = $b->background_psql('postgres');
$holder2->query_safe('BEGIN; SELECT * FROM p WHERE id = 50 FOR UPDATE');
$a->safe_psql('postgres', "UPDATE p SET note = 'e1' WHERE id = 50");
$a->safe_psql('postgres', "INSERT INTO p VALUES (2501, 1, 'e2')");
$a->safe_psql('postgres', "INSERT INTO p VALUES (2502, 666, 'e3')");
$a->safe_psql('postgres', "UPDATE p SET note = 'e4' WHERE id = 2502");
ok($b->poll_query_until('postgres',
		q{SELECT last_error LIKE '%no_666%' FROM concord.subscription_status}),
	'the failed worker recorded its error');
$holder2->query_safe('COMMIT');
$holder2->quit;
$b->safe_psql('postgres', 'ALTER TABLE p DROP CONSTRAINT no_666');
wait_for_apply_all([$b], label => 'after the error');
is($b->safe_psql('postgres', "SELECT string_agg(note, ',' ORDER BY id) FROM p WHERE id IN (50, 2501, 2502)"),
	'e1,e2,e4', 'everything applied once the constraint is gone');
unlike(substr(slurp_file($b->logfile), $log_offset), qr/terminated by signal|was terminated by|TRAP:/,
	'no process of the subscriber crashed');

# 6. A random workload from several clients.
my $seed = $ENV{CONCORD_SEED} // time();
diag("seed $seed");
srand($seed);
my @clients;
foreach my $c (1 .. 4)
{
	my $sql = '';
	foreach my $i (1 .. 300)
	{
		my $k = 3000 + int(rand(60));
		my $r = rand();
		if ($r < 0.3)
		{
			$sql .= "INSERT INTO p VALUES ($k, $i, 'c$c') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note;\n";
		}
		elsif ($r < 0.55)
		{
			$sql .= "UPDATE p SET v = v + 1, note = 'u$c' WHERE id = $k;\n";
		}
		elsif ($r < 0.7)
		{
			$sql .= "DELETE FROM p WHERE id = $k;\n";
		}
		elsif ($r < 0.8)
		{
			my $e = int(rand(20));
			$sql .= "INSERT INTO u VALUES ($k, 'e$e', $i) ON CONFLICT DO NOTHING;\n";
		}
		elsif ($r < 0.9)
		{
			my $e = int(rand(20));
			$sql .= "UPDATE uf SET email = 'f$c-$i' WHERE email = 'f$e' OR id = $k;\n"
			  . "INSERT INTO uf VALUES ($k, 'f$e', $i) ON CONFLICT DO NOTHING;\n";
		}
		else
		{
			$sql .= "BEGIN; INSERT INTO nk VALUES ($k, 'c$c'); UPDATE p SET v = v + 1 WHERE id = $k; COMMIT;\n";
		}
	}
	push @clients, start_psql($a, $sql);
}
$a->safe_psql('postgres', q{
	INSERT INTO big SELECT g, repeat('b', 200) FROM generate_series(1, 5000) g;
	BEGIN; TRUNCATE nk; INSERT INTO nk VALUES (0, 'after truncate'); COMMIT;});
foreach my $h (@clients)
{
	my ($ok, undef, $stderr) = finish_psql($h);
	ok($ok, 'a client ran without error') or diag($stderr);
}
wait_for_apply_all([$b], label => 'random workload');
checksums_match([ $a, $b ], \@tables, 'random workload');
no_conflicts('random workload');
is($b->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
	'replicating', 'the subscription replicates');

# 7. Disabled while every worker holds a transaction for apply_delay and
# the leader waits for a free one: apply stops at once, nothing applied.
my $back = subscribe($a, $b, synchronize_data => 0, apply_delay => '1 hour');
wait_replicating([$a], 'a subscribes to b with apply_delay');
$b->safe_psql('postgres', "INSERT INTO p VALUES (9000 + $_, 0, 'delayed')") foreach 1 .. 6;
ok($a->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type = 'concord apply worker' AND wait_event = 'Extension'}),
	'every worker of the delayed subscription waits');
$a->safe_psql('postgres', "SELECT concord.alter_subscription_disable('$back')");
ok($a->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'concord apply%'}),
	'disabled, its leader and workers stop');
is($a->safe_psql('postgres', q{SELECT count(*) FROM p WHERE note = 'delayed'}), '0',
	'nothing held back was applied');

done_testing();
