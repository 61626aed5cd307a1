# Apply keeps the executor of a table that runs no user code open from the
# table's first change to the end of the remote transaction
# (src/apply/apply_exec.c).  What that must not change:
#
#  1. One remote transaction writing 11 tables in turn (more than the 8
#     executors kept at once), three times over, with UPDATEs and DELETEs
#     of rows inserted earlier in the same transaction, a table whose
#     ALWAYS trigger runs user code (never kept) between them, and a
#     table referenced by a foreign key (its triggers do not fire in
#     apply): every table equals the provider's, and the trigger saw
#     every row.
#  2. A TRUNCATE after INSERTs into the same table in one transaction
#     (TRUNCATE refuses a table the session holds open: the kept
#     executors are closed first), then more INSERTs; and TRUNCATE ...
#     CASCADE of the referenced table in the middle of a transaction.
#  3. A unique violation in a kept table while others are kept: the
#     transaction rolls back (the kept executors are forgotten) and is
#     replayed with conflict detection, an insert_exists conflict; the
#     transactions after it apply.
#  4. No reference leak or crash in the subscribers' logs (checked last).
#  5. A custom handler's row over a local row of a table with row
#     triggers that do not fire in apply (a buffer pinned in the
#     handler's subtransaction).
#  6. A remote INSERT deleted again in the same change, on a table with a
#     BEFORE DELETE row trigger (the lock must see the INSERT).
#  7. INSERTs written together: several batches, batches cut by size,
#     rows updated and deleted after their INSERT in the same transaction.
#  8. A tombstone made while INSERTs wait to be written together: the
#     transaction is replayed with look-ups.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($a, $b) = concord_nodes(2, prefix => 'ke');
my @plain = map { "k$_" } 1 .. 11;
my $ddl = join('',
	map { "CREATE TABLE $_ (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);\n" }
	  @plain)
  . "CREATE TABLE kt (id int PRIMARY KEY, v text NOT NULL);\n"
  . "CREATE TABLE parent (id int PRIMARY KEY, v text);\n"
  . "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent, v text);\n";
run_on_all([ $a, $b ], $ddl);
my @tables = (@plain, 'kt', 'parent', 'child');
add_tables([ $a, $b ], \@tables);

# kt runs user code here: an ALWAYS trigger that notes each row.
$b->safe_psql('postgres', q{
	CREATE TABLE kt_seen (id int, v text);
	CREATE FUNCTION kt_note() RETURNS trigger LANGUAGE plpgsql AS
	  $$ BEGIN INSERT INTO public.kt_seen VALUES (NEW.id, NEW.v); RETURN NEW; END $$;
	CREATE TRIGGER kt_note AFTER INSERT OR UPDATE ON kt
	  FOR EACH ROW EXECUTE FUNCTION kt_note();
	ALTER TABLE kt ENABLE ALWAYS TRIGGER kt_note;
});
my $sub = subscribe($b, $a);
wait_replicating([$b], 'subscribed');

sub all_equal
{
	my ($label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	wait_for_apply_all([$b]);
	checksums_match([ $a, $b ], \@tables, $label);
	is($b->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
		'replicating', "$label: the subscription replicates");
	return;
}

# 1. Eleven tables in turn, three rounds, in one transaction.
my $sql = "BEGIN;\n";
foreach my $round (1 .. 3)
{
	foreach my $t (@plain)
	{
		$sql .= "INSERT INTO $t (id, v) VALUES ($round, '$t r$round'), ($round + 10, 'x');\n";
		$sql .= "INSERT INTO kt VALUES ($round * 100 + ${\ substr($t, 1)}, '$t');\n"
		  if $t eq 'k5' || $t eq 'k9';
		$sql .= "UPDATE $t SET n = n + 1, v = v || ' u' WHERE id = $round;\n";
		$sql .= "DELETE FROM $t WHERE id = $round + 10;\n" if $round == 2;
	}
	$sql .= "INSERT INTO parent VALUES ($round, 'p'); INSERT INTO child VALUES ($round, $round, 'c');\n";
	$sql .= "UPDATE parent SET v = 'p2' WHERE id = $round; DELETE FROM child WHERE id = $round - 1;\n";
}
$sql .= "UPDATE k1 SET n = n + 10; DELETE FROM k11 WHERE id = 1; INSERT INTO k11 VALUES (1, 'again', 5);\n";
$sql .= "COMMIT;\n";
$a->safe_psql('postgres', $sql);
all_equal('one transaction over 14 tables');
is($b->safe_psql('postgres', 'SELECT count(*) FROM kt_seen'), '6',
	'the ALWAYS trigger of the table that runs user code saw each of its rows');
is($b->safe_psql('postgres', "SELECT string_agg(id || ':' || n, ',' ORDER BY id) FROM k1"),
	'1:11,2:11,3:11,11:10,13:10', 'k1: updates of rows inserted in the same transaction applied');

# 2. TRUNCATE of a table the transaction wrote already, then writes again.
$a->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO k1 VALUES (20, 'before');
	INSERT INTO k2 VALUES (20, 'before');
	UPDATE k1 SET n = 7 WHERE id = 20;
	TRUNCATE k1;
	INSERT INTO k1 VALUES (21, 'after');
	INSERT INTO k2 VALUES (21, 'after');
	COMMIT;
});
all_equal('TRUNCATE after writes in one transaction');
is($b->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM k1"), '21',
	'k1 holds only the row inserted after the TRUNCATE');

$a->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO parent VALUES (30, 'p');
	INSERT INTO child VALUES (30, 30, 'c');
	TRUNCATE parent CASCADE;
	INSERT INTO parent VALUES (31, 'p');
	INSERT INTO child VALUES (31, 31, 'c');
	INSERT INTO k3 VALUES (31, 'with');
	COMMIT;
});
all_equal('TRUNCATE ... CASCADE in the middle of a transaction');
is($b->safe_psql('postgres',
		"SELECT (SELECT string_agg(id::text, ',') FROM parent) || '/' || (SELECT string_agg(id::text, ',') FROM child)"),
	'31/31', 'parent and child hold only the rows after the cascade');

# 3. A row only the subscriber has collides with a remote INSERT.
$b->safe_psql('postgres', "INSERT INTO k5 VALUES (50, 'local only')");
$a->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO k4 VALUES (50, 'remote');
	INSERT INTO k5 VALUES (49, 'remote');
	INSERT INTO k5 VALUES (50, 'remote');
	INSERT INTO k6 VALUES (50, 'remote');
	COMMIT;
});
$a->safe_psql('postgres', "INSERT INTO k4 VALUES (51, 'next'); INSERT INTO k5 VALUES (51, 'next')");
all_equal('a unique violation replayed with conflict detection');
is($b->safe_psql('postgres',
		"SELECT conflict_type || ' ' || key::text FROM concord.conflict_history WHERE relation = 'public.k5'"),
	'insert_exists {"id": 50}', 'the collision is an insert_exists conflict');
ok($b->log_contains('replaying its transaction with conflict detection'),
	'the transaction was replayed after the unique violation');

# 5. A custom handler's row over the local row of a table with a row
#    trigger that does not fire in apply: the trigger has the UPDATE fetch
#    the old row into a slot with its buffer pinned, inside the handler's
#    subtransaction.  Before the fix the pin was released with the
#    subtransaction, and emptying the slot later failed for ever.
run_on_all([ $a, $b ], 'CREATE TABLE hc (id int PRIMARY KEY, v text NOT NULL)');
add_tables([ $a, $b ], ['hc']);
$b->safe_psql('postgres', q{
	CREATE FUNCTION hc_touch() RETURNS trigger LANGUAGE plpgsql AS
	  $$ BEGIN RETURN NEW; END $$;
	CREATE TRIGGER hc_after AFTER UPDATE ON hc FOR EACH ROW EXECUTE FUNCTION hc_touch();
	CREATE TRIGGER hc_before BEFORE UPDATE ON hc FOR EACH ROW EXECUTE FUNCTION hc_touch();
	CREATE FUNCTION public.hc_merge(l public.hc, r public.hc, i concord.conflict_info)
	RETURNS public.hc LANGUAGE sql AS $$ SELECT r.id, l.v || '+' || r.v $$;
	SELECT concord.set_conflict_resolver('hc', 'custom',
		'public.hc_merge(public.hc, public.hc, concord.conflict_info)',
		conflict_type => 'insert_exists');
	INSERT INTO hc VALUES (1, 'local');
});
$a->safe_psql('postgres', "INSERT INTO hc VALUES (1, 'remote'); INSERT INTO hc VALUES (2, 'next')");
wait_for_apply_all([$b]);
is($b->safe_psql('postgres', "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM hc"),
	'1:local+remote,2:next', "the handler's row is written over the local row, and the next change follows");
is($b->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
	'replicating', 'the subscription replicates after the handler');

# 6. A remote INSERT older than this node's DELETE of its key is written,
#    then deleted again in the same change (222_delete_insert.pl, row 1),
#    on a table with a BEFORE DELETE row trigger that does not fire in
#    apply: the trigger locks the row it deletes, which must see the
#    INSERT.  Before the fix the lock used the INSERT's own command id:
#    "attempted to lock invisible tuple", for ever.
my ($m1, $m2) = concord_nodes(2, prefix => 'km');
setup_mesh([ $m1, $m2 ], q{
	CREATE TABLE dl (id int PRIMARY KEY, v text NOT NULL);
	CREATE FUNCTION dl_keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$;
	CREATE TRIGGER dl_keep BEFORE DELETE ON dl FOR EACH ROW EXECUTE FUNCTION dl_keep();
}, ['dl']);
$m1->safe_psql('postgres', "INSERT INTO dl VALUES (1, 'first')");
wait_for_apply_all([ $m1, $m2 ], label => 'dl row 1');
partition_nodes([ $m1, $m2 ], 'dl partitioned');
$m2->safe_psql('postgres', 'DELETE FROM dl WHERE id = 1');
$m2->safe_psql('postgres', "INSERT INTO dl VALUES (1, 'km2 again')");
$m1->safe_psql('postgres', 'DELETE FROM dl WHERE id = 1');
heal_nodes([ $m1, $m2 ], 'dl healed');
checksums_match([ $m1, $m2 ], ['dl'], 'the later DELETE wins');
is($m1->safe_psql('postgres', 'SELECT count(*) FROM dl'), '0', 'row 1 is gone on km1');
foreach my $n ($m1, $m2)
{
	is($n->safe_psql('postgres', q{SELECT string_agg(DISTINCT status, ',') FROM concord.subscription_status}),
		'replicating', $n->name . ': replicating');
	unlike(slurp_file($n->logfile), qr/attempted to lock invisible tuple/,
		$n->name . ': no lock of an invisible row');
}

# 7. INSERTs written together (src/apply/apply_batch.c), on a fresh pair
#    (km2 and ke2 met conflicts above, and apply looks for conflicts for
#    a minute after one: it writes row by row meanwhile): 2,500 rows into
#    one table in one transaction (more than one batch of 1,000), rows of
#    100 kB stored out of line (batches cut by size), an UPDATE of rows
#    inserted just before, INSERTs into tables in turn, then a DELETE and
#    INSERTs after it.  This node's WAL shows the rows written together
#    (pg_walinspect: Heap2 MULTI_INSERT records).
my ($c1, $c2) = concord_nodes(2, prefix => 'kc');
run_on_all([ $c1, $c2 ], q{
	CREATE TABLE kb (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
	CREATE TABLE kb2 (id int PRIMARY KEY, v text NOT NULL);
	CREATE TABLE kb3 (id int PRIMARY KEY, v text NOT NULL CHECK (v <> 'bad'));
});
add_tables([ $c1, $c2 ], [ 'kb', 'kb2', 'kb3' ]);
$c2->safe_psql('postgres', 'CREATE EXTENSION IF NOT EXISTS pg_walinspect');
subscribe($c2, $c1);
wait_replicating([$c2], 'kc2 subscribed');
my $lsn0 = $c2->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$c1->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO kb SELECT g, 'row ' || g FROM generate_series(1, 2500) g;
	UPDATE kb SET n = 1 WHERE id IN (1, 1000, 1001, 2500);
	INSERT INTO kb SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 3200) i)
	  FROM generate_series(3001, 3030) g;
	INSERT INTO kb VALUES (4001, 'a'); INSERT INTO kb2 VALUES (1, 'b'); INSERT INTO kb VALUES (4002, 'c');
	INSERT INTO kb2 VALUES (2, 'd'); INSERT INTO kb3 VALUES (1, 'e'), (2, 'f');
	DELETE FROM kb WHERE id = 2;
	INSERT INTO kb VALUES (2, 'again'), (5001, 'after the delete');
	COMMIT;
});
wait_for_apply_all([$c2]);
checksums_match([ $c1, $c2 ], [ 'kb', 'kb2', 'kb3' ], 'INSERTs written together');
is($c2->safe_psql('postgres', q{SELECT count(*) || '/' || sum(n) FROM kb}), '2533/4',
	'kb: every row, the updates of rows of the same transaction applied');
# Apply commits asynchronously: a checkpoint flushes its WAL first.
$c2->safe_psql('postgres', 'CHECKPOINT');
cmp_ok($c2->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_get_wal_records_info('$lsn0', pg_current_wal_flush_lsn())
		 WHERE resource_manager = 'Heap2' AND record_type LIKE 'MULTI_INSERT%'}),
	'>=', 3, "kc2's WAL holds the rows written together");
is($c2->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
	'replicating', 'kc2 replicates');

# 8. A row of a table is deleted here while remote INSERTs into it wait
#    to be written together.  kc2 alone holds a row 7.  A remote
#    transaction inserts rows 3 to 8; written together, the index entry
#    of 5 waits for a local session's uncommitted INSERT of 5; meanwhile
#    another session deletes row 7 (a tombstone, later than the remote
#    INSERT), and the first rolls back, so that the remote 7 meets no
#    row.  Row by row, the INSERT of 7 would have found the tombstone
#    after it was written and, older than the DELETE, been deleted again;
#    written together, the transaction is replayed with look-ups to the
#    same end.  (Before that replay, row 7 stayed.)
$c2->safe_psql('postgres', "INSERT INTO kb3 VALUES (7, 'kc2 only')");
my $holder = $c2->background_psql('postgres');
$holder->query_safe("BEGIN; INSERT INTO kb3 VALUES (5, 'local, uncommitted')");
$c1->safe_psql('postgres',
	"INSERT INTO kb3 SELECT g, 'remote ' || g FROM generate_series(3, 8) g");
ok($c2->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_stat_activity
		                WHERE backend_type LIKE 'concord apply%' AND wait_event_type = 'Lock')}),
	'apply waits for the local INSERT of key 5');
$c2->safe_psql('postgres', 'DELETE FROM kb3 WHERE id = 7');
$holder->query_safe('ROLLBACK');
$holder->quit;
wait_for_apply_all([$c2]);
is($c2->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM kb3"),
	'1,2,3,4,5,6,8', 'the remote INSERT of 7, older than the DELETE here, is deleted again');
ok($c2->log_contains('had a row deleted meanwhile, replaying its transaction with conflict detection'),
	'the transaction was replayed with look-ups');
is($c2->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
	'replicating', 'the subscription replicates after the replay');

# 4. Nothing leaked, nothing crashed.
foreach my $n ($b, $m1, $m2, $c2)
{
	my $log = slurp_file($n->logfile);
	my @bad = grep { /leak|not owned by resource owner|terminated by signal|TRAP/i }
	  split /\n/, $log;
	is(join("\n", @bad), '', $n->name . ': no leak warning, no crash in the log');
}

done_testing();
