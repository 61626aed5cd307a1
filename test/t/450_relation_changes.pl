# The apply worker's map of a table's columns, against the table as it is.
#
#  1. Review #6: an ALTER COLUMN TYPE committed on the subscriber between
#     two changes of one remote transaction.  The map of the second table
#     was made for the old column type and was used before the table was
#     locked (which is when the ALTER's invalidation is read): an integer
#     went into a text column (a crash of the server, or a corrupt row).
#     The first change's trigger waits on a lock the test holds, so the
#     ALTER commits exactly there.
#  2. Review #9: the provider sends a table's metadata again whenever its
#     cache of the table is invalidated (ANALYZE does it).  Each re-send
#     left the previous map, with a memory context of its input functions,
#     behind in the apply worker: counted in its memory contexts.
#  3. Review #25: the subscriber's key has a column the provider's key
#     does not.  An UPDATE searched with the provider's key columns and
#     the new values of the rest, found nothing and became a silent
#     update_missing (the old row stayed, a second row was inserted); a
#     DELETE was a silent delete_missing.  Now the subscription stops with
#     an error naming the column, and retries once the keys agree.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($p, $s) = concord_nodes(2, prefix => 'rc');
run_on_all([ $p, $s ],
	'CREATE TABLE a (id int PRIMARY KEY);
	 CREATE TABLE b (id int PRIMARY KEY, n int);');
add_tables([ $p, $s ], [ 'a', 'b' ]);
subscribe($s, $p);
wait_replicating([$s], 'subscribed');

# The map of b is made, for n integer.
$p->safe_psql('postgres', 'INSERT INTO b VALUES (1, 1)');
wait_for_apply_all([$s]);

# A trigger on a that waits for the test, in the apply worker.
$s->safe_psql('postgres', q{
	CREATE FUNCTION wait_for_test() RETURNS trigger LANGUAGE plpgsql AS
	$$BEGIN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242); RETURN NEW; END$$;
	CREATE TRIGGER wait_here BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION wait_for_test();
	ALTER TABLE a ENABLE ALWAYS TRIGGER wait_here;
});
my $holder = $s->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');

$p->safe_psql('postgres', 'BEGIN; INSERT INTO a VALUES (1); INSERT INTO b VALUES (2, 5); COMMIT;');
ok($s->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		 WHERE a.backend_type LIKE 'concord apply%' AND l.locktype = 'advisory' AND NOT l.granted}),
	'apply waits in the trigger of the first change');
$s->safe_psql('postgres', 'ALTER TABLE b ALTER COLUMN n TYPE text USING n::text');
my $start = $s->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$holder->quit;

wait_for_apply_all([$s]);
is($s->safe_psql('postgres', q{SELECT string_agg(id || '=' || n, ',' ORDER BY id) FROM b}),
	'1=1,2=5', 'the second change is written with the column as it is now (text)');
is($s->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $start,
	'the subscriber did not crash');
unlike(slurp_file($s->logfile), qr/terminated by signal/, 'no process was killed by a signal');

# 2. Metadata sent again: one map per table, not one per re-send.
$s->safe_psql('postgres', 'DROP TRIGGER wait_here ON a');
foreach my $i (1 .. 20)
{
	$p->safe_psql('postgres', "ANALYZE b; INSERT INTO b VALUES (100 + $i, '$i');");
}
wait_for_apply_all([$s]);
my $pid = $s->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'concord apply'});
my $offset = -s $s->logfile;
$s->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
$s->wait_for_log(qr/Grand total/, $offset);
my $log = substr(slurp_file($s->logfile), $offset);
my $maps = () = $log =~ /(concord input functions|concord apply column map)/g;
cmp_ok($maps, '<=', 2, "one column map per table (a and b), not one per re-send ($maps)");

# 3. Keys that disagree: provider PRIMARY KEY (id), subscriber (id, k).
$p->safe_psql('postgres', 'CREATE TABLE c (id int PRIMARY KEY, k int NOT NULL, v text)');
$s->safe_psql('postgres', 'CREATE TABLE c (id int NOT NULL, k int NOT NULL, v text, PRIMARY KEY (id, k))');
add_tables([ $p, $s ], ['c']);
$p->safe_psql('postgres', q{INSERT INTO c VALUES (1, 1, 'one'), (2, 2, 'two')});
wait_for_apply_all([$s]);
is($s->safe_psql('postgres', 'SELECT count(*) FROM c'), '2', 'inserts need no key');

$p->safe_psql('postgres', q{UPDATE c SET k = 10, v = 'ten' WHERE id = 1});
my $sub = $s->safe_psql('postgres', 'SELECT subscription_name FROM concord.subscription_status');
ok($s->poll_query_until('postgres', qq{
		SELECT status = 'down' AND last_error LIKE '%column "k" of the key of public.c here is not part of the provider''s key%'
		  FROM concord.subscription_status WHERE subscription_name = '$sub'}),
	'an UPDATE by a key the subscriber does not share stops the subscription, naming the column');
is($s->safe_psql('postgres', q{SELECT string_agg(id || ':' || k || ':' || v, ',' ORDER BY id, k) FROM c}),
	'1:1:one,2:2:two', 'no row was inserted beside the one the UPDATE was for');
is($s->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'), '0',
	'and no update_missing conflict was recorded');

# The keys agree again: the subscription retries the UPDATE, then a DELETE.
$s->safe_psql('postgres', 'ALTER TABLE c DROP CONSTRAINT c_pkey, ADD PRIMARY KEY (id)');
$p->safe_psql('postgres', 'DELETE FROM c WHERE id = 2');
wait_for_apply_all([$s]);
is($s->safe_psql('postgres', q{SELECT string_agg(id || ':' || k || ':' || v, ',' ORDER BY id, k) FROM c}),
	'1:10:ten', 'with the keys agreeing, the UPDATE and the DELETE are applied');
is($s->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'), '0',
	'without a conflict');

done_testing();

