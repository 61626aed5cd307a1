# Two apply workers take turns on a key when their providers write the
# same key as different text (review #16).  The key lock hashed the key's
# text as the provider sent it, so numeric 1.0 from one provider and 1.00
# from another, equal keys of one row here, took two different locks, and
# the two workers decided on the row at once (the race that made nodes
# diverge in the seed-487439477 workload).  Now the key is hashed as this
# node's column holds it.
#
# pa and pb each hold the row k = 1.0 / 1.00; s subscribes to both.  A
# session on s holds a row of `blocker`, so that pa's transaction, which
# updates t then blocker, stops on s while holding its key lock.  pb's
# UPDATE of the same key must then wait for that key lock (an advisory
# lock, objsubid 192), not go on to the row.
#
# The key is hashed as this node's column holds it: converted by the
# column type's input function, which for a domain runs its CHECK
# constraints.  That runs as the table's owner, like the write itself,
# never as the worker's superuser.
#
# Part 3: keys equal under the key index's collation ('A' and 'a' under a
# case-insensitive one), though the column's is deterministic: the hash
# follows the index.
#
# Part 2: the key locks are taken only while a database has several
# subscriptions, and a worker looked at that once per transaction: a
# transaction already under way when a second subscription appeared took
# none, and the new subscription's worker changed its rows at once.  The
# new worker now first waits for such transactions (a virtualxid lock).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($pa, $pb, $s) = map { concord_node($_) } qw(pa pb s);
my @all = ($pa, $pb, $s);
run_on_all([ $pa, $pb ], 'CREATE TABLE t (k numeric PRIMARY KEY, v text);');
$s->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE FUNCTION key_check(numeric) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		RAISE LOG 'key check as %', current_user;
		RETURN true;
	END $$;
	CREATE DOMAIN checked_key AS numeric CHECK (key_check(VALUE));
	CREATE TABLE t (k checked_key PRIMARY KEY, v text);
	ALTER TABLE t OWNER TO alice;});
run_on_all(\@all, 'CREATE TABLE blocker (id int PRIMARY KEY, n int);');
add_tables(\@all, [ 't', 'blocker' ]);
$pa->safe_psql('postgres', "INSERT INTO t VALUES (1.0, 'a'); INSERT INTO blocker VALUES (1, 0)");
$pb->safe_psql('postgres', "INSERT INTO t VALUES (1.00, 'b')");
is($pa->safe_psql('postgres', 'SELECT k::text FROM t') . ' '
	  . $pb->safe_psql('postgres', 'SELECT k::text FROM t'),
	'1.0 1.00', 'the providers write the key as different text');

my $sub_a = subscribe($s, $pa, synchronize_data => 0);
my $sub_b = subscribe($s, $pb, synchronize_data => 0);
wait_replicating([$s], 's receives from pa and pb');
$s->safe_psql('postgres',
	"SET ROLE alice; INSERT INTO t VALUES (1, 's'); RESET ROLE; INSERT INTO blocker VALUES (1, 0)");

my $holder = $s->background_psql('postgres');
$holder->query_safe('BEGIN; SELECT * FROM blocker WHERE id = 1 FOR UPDATE');

$pa->safe_psql('postgres',
	"BEGIN; UPDATE t SET v = 'a2' WHERE k = 1.0; UPDATE blocker SET n = 1 WHERE id = 1; COMMIT;");
ok($s->poll_query_until('postgres', 'SELECT count(*) = 1 FROM pg_locks WHERE NOT granted'),
	"pa's transaction waits on s for the blocker row, holding its key lock");

$pb->safe_psql('postgres', "UPDATE t SET v = 'b2' WHERE k = 1.00");
ok($s->poll_query_until('postgres', 'SELECT count(*) = 2 FROM pg_locks WHERE NOT granted'),
	"pb's change of the same key waits too");
is($s->safe_psql('postgres',
		q{SELECT string_agg(locktype || CASE WHEN locktype = 'advisory' THEN ':' || objsubid ELSE '' END,
		                    ',' ORDER BY locktype)
		    FROM pg_locks WHERE NOT granted AND locktype <> 'transactionid'}),
	'advisory:192', "pb's worker waits for the key lock of pa's worker, not for the row");

$holder->query_safe('COMMIT');
$holder->quit;
ok(wait_for_apply_one($s, $sub_a, $pa) && wait_for_apply_one($s, $sub_b, $pb),
	's applied both');
is($s->safe_psql('postgres', 'SELECT v FROM t'), 'b2',
	"pb's later UPDATE is the row's last version on s");

# Part 2: pa's transaction begins while s has one subscription.
unsubscribe($s, $sub_b);
$pa->safe_psql('postgres', "UPDATE t SET v = 'a3' WHERE k = 1.0");
ok(wait_for_apply_one($s, $sub_a, $pa), 's applied a transaction of pa alone');
$holder = $s->background_psql('postgres');
$holder->query_safe('BEGIN; SELECT * FROM blocker WHERE id = 1 FOR UPDATE');
$pa->safe_psql('postgres',
	"BEGIN; UPDATE t SET v = 'a4' WHERE k = 1.0; UPDATE blocker SET n = 2 WHERE id = 1; COMMIT;");
ok($s->poll_query_until('postgres', 'SELECT count(*) = 1 FROM pg_locks WHERE NOT granted'),
	"pa's transaction waits on s for the blocker row");
$sub_b = subscribe($s, $pb, synchronize_data => 0, name => 'sub_s_pb_again');
wait_replicating([$s], 's receives from pb again');
$pb->safe_psql('postgres', "UPDATE t SET v = 'b5' WHERE k = 1.00");
ok($s->poll_query_until('postgres', 'SELECT count(*) = 2 FROM pg_locks WHERE NOT granted'),
	"pb's change waits on s");
is($s->safe_psql('postgres',
		q{SELECT string_agg(locktype, ',') FROM pg_locks WHERE NOT granted AND locktype <> 'transactionid'}),
	'virtualxid', "the new subscription's worker waits for pa's transaction, which locks no key");
$holder->query_safe('COMMIT');
$holder->quit;
ok(wait_for_apply_one($s, $sub_a, $pa) && wait_for_apply_one($s, $sub_b, $pb),
	's applied both again');
is($s->safe_psql('postgres', 'SELECT v FROM t'), 'b5',
	"pb's later UPDATE is the row's last version on s");

# Part 3: keys equal under the key index's collation, not the column's.
# On s, tc's replica identity is a unique index on k under a
# case-insensitive ICU collation: 'A' from pa and 'a' from pb are one row
# there, and must take one key lock.
$s->safe_psql('postgres', q{
	CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
	CREATE TABLE tc (k text NOT NULL, v text);
	CREATE UNIQUE INDEX tc_k ON tc (k COLLATE ci);
	ALTER TABLE tc REPLICA IDENTITY USING INDEX tc_k;});
foreach my $prov ($pa, $pb)
{
	$prov->safe_psql('postgres',
		"CREATE TABLE tc (k text PRIMARY KEY, v text);
		 SELECT concord.replication_set_add_table('default', 'tc');");
}
$pa->safe_psql('postgres', "INSERT INTO tc VALUES ('A', 'a')");
ok(wait_for_apply_one($s, $sub_a, $pa), "pa's row of tc reached s");
$pb->safe_psql('postgres', "INSERT INTO tc VALUES ('a', 'b')");
ok(wait_for_apply_one($s, $sub_b, $pb), "pb's row of tc, the same key on s, reached s");
$holder = $s->background_psql('postgres');
$holder->query_safe('BEGIN; SELECT * FROM blocker WHERE id = 1 FOR UPDATE');
$pa->safe_psql('postgres',
	"BEGIN; UPDATE tc SET v = 'a3' WHERE k = 'A'; UPDATE blocker SET n = 3 WHERE id = 1; COMMIT;");
ok($s->poll_query_until('postgres', 'SELECT count(*) = 1 FROM pg_locks WHERE NOT granted'),
	"pa's transaction waits on s for the blocker row, holding the key lock of 'A'");
$pb->safe_psql('postgres', "UPDATE tc SET v = 'b3' WHERE k = 'a'");
ok($s->poll_query_until('postgres', 'SELECT count(*) = 2 FROM pg_locks WHERE NOT granted'),
	"pb's change of 'a' waits on s");
is($s->safe_psql('postgres',
		q{SELECT string_agg(locktype || ':' || objsubid, ',') FROM pg_locks
		   WHERE NOT granted AND locktype <> 'transactionid'}),
	'advisory:192', "pb's worker waits for the key lock of 'A': the index's collation makes them one key");
$holder->query_safe('COMMIT');
$holder->quit;
ok(wait_for_apply_one($s, $sub_a, $pa) && wait_for_apply_one($s, $sub_b, $pb),
	's applied both changes of tc');
is($s->safe_psql('postgres', 'SELECT count(*) || v FROM tc GROUP BY v'), '1b3',
	"s holds one row of tc, with pb's later UPDATE");

my $superuser = $s->safe_psql('postgres', 'SELECT current_user');
my $log = slurp_file($s->logfile);
ok($log =~ /key check as alice/, "the domain's check ran as the table's owner");
ok($log !~ /key check as \Q$superuser\E/, "the domain's check never ran as superuser $superuser")
  or diag(join("\n", grep { /key check as/ } split /\n/, $log));

done_testing();
