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

# 4. Nothing leaked, nothing crashed.
foreach my $n ($b, $m1, $m2)
{
	my $log = slurp_file($n->logfile);
	my @bad = grep { /leak|not owned by resource owner|terminated by signal|TRAP/i }
	  split /\n/, $log;
	is(join("\n", @bad), '', $n->name . ': no leak warning, no crash in the log');
}

done_testing();
