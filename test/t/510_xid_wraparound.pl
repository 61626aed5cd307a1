# A node whose transaction counter has wrapped around (review #10).  A
# frozen row keeps its raw xmin; concord read a row's version (commit
# timestamp, origin) from it, and after a wraparound that number belongs
# to another, recent transaction: the row (and a tombstone) took that
# transaction's version, and a remote change that should have applied lost
# to it.  Now a frozen row's version is unknown once the counter has
# wrapped, which the conflict rules treat as old; before the first
# wraparound the raw xmin is exact (220_delete_update.pl freezes rows and
# relies on their versions).
#
# n2 subscribes to n1.  n1 writes row 1 and row 2 and deletes row 2 (n2
# keeps a tombstone); n2's subscription is disabled; n1 updates row 1 and
# inserts row 2 again.  n2 is stopped, every row of it frozen (single-user
# VACUUM FREEZE: no worker writes meanwhile), and pg_resetwal sets its
# counter into the next epoch, just below the xmins of row 1 and of the
# tombstone, as a counter that went round would be.  n2 then commits local
# transactions until those xids are taken again.  Pass criteria: the raw
# xmins now name recent local transactions (the wraparound happened; the
# tombstone may be gone already: the manager removes tombstones of unknown
# version);
# after enabling, n2 holds n1's rows and records no conflict.  Before the
# fix, n2 kept the old row 1 (update_origin_differs, keep_local) and lost
# the re-inserted row 2 to its tombstone.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2, prefix => 'wrap');
run_on_all([ $n1, $n2 ], 'CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);');
$n2->safe_psql('postgres', 'CREATE EXTENSION pg_visibility');
add_tables([ $n1, $n2 ], ['t']);
my $sub = subscribe($n2, $n1, synchronize_data => 0);
wait_replicating([$n2], 'n2 from n1');

$n1->safe_psql('postgres', "INSERT INTO t VALUES (1, 'first'), (2, 'first')");
$n1->safe_psql('postgres', 'DELETE FROM t WHERE id = 2');
ok(wait_for_apply_one($n2, $sub, $n1), 'n2 applied the rows and the delete');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM concord.tombstone'), '1', 'n2 keeps the tombstone of row 2');

$n2->safe_psql('postgres', "SELECT concord.alter_subscription_disable('$sub')");
$n1->safe_psql('postgres', "UPDATE t SET v = 'updated' WHERE id = 1");
$n1->safe_psql('postgres', "INSERT INTO t VALUES (2, 'inserted again')");
my $last_n1 = $n1->safe_psql('postgres',
	'SELECT max(pg_xact_commit_timestamp(xmin)) FROM t');

my $xmin_row = $n2->safe_psql('postgres', 'SELECT xmin FROM t WHERE id = 1');
my $xmin_tomb = $n2->safe_psql('postgres', 'SELECT xmin FROM concord.tombstone');
note("n2: row 1 has xmin $xmin_row, the tombstone $xmin_tomb");
my ($low, $high) = sort { $a <=> $b } ($xmin_row, $xmin_tomb);

# Freeze everything with no background process writing (single-user
# mode), then move the counter below both xmins, in epoch 1.
$n2->stop('fast');
foreach my $db ('postgres', 'template1')
{
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'postgres', '--single', '-D', $n2->data_dir, $db ],
		'<', \"VACUUM FREEZE;\n", '>', \$out, '2>', \$err);
	ok($ok, "single-user VACUUM FREEZE of $db") or diag("$out\n$err");
}
my $target = $low - 10;
command_ok([ 'pg_resetwal', '-x', $target, '-e', '1', $n2->data_dir ],
	"pg_resetwal: next xid $target, epoch 1");
$n2->start;

is($n2->safe_psql('postgres', "SELECT bool_and(all_frozen) FROM pg_visibility_map('t')"),
	't', "every page of n2's t is frozen");
# Local transactions until both xids are given out again.
$n2->safe_psql('postgres', qq{
	DO \$\$
	BEGIN
		WHILE pg_catalog.txid_current() % 4294967296 <= $high + 2 LOOP
			COMMIT;
		END LOOP;
	END \$\$;});
is($n2->safe_psql('postgres', 'SELECT txid_current() / 4294967296'), '1', 'n2 is in epoch 1');
is($n2->safe_psql('postgres',
		"SELECT pg_xact_commit_timestamp(xmin) > '$last_n1' AND (pg_xact_commit_timestamp_origin(xmin)).roident = 0
		   FROM t WHERE id = 1"),
	't', "row 1's raw xmin now names a recent local transaction of n2");
# The manager's tombstone removal may already have taken the tombstone:
# frozen after a wraparound, its version is unknown, which is old.
is($n2->safe_psql('postgres',
		"SELECT coalesce(bool_and(pg_xact_commit_timestamp(xmin) > '$last_n1'), true) FROM concord.tombstone"),
	't', "the tombstone's raw xmin too (if the tombstone is still there)");

$n2->safe_psql('postgres', "SELECT concord.alter_subscription_enable('$sub')");
ok(wait_for_apply_one($n2, $sub, $n1), 'n2 applied what n1 wrote meanwhile');
is($n2->safe_psql('postgres', 'SELECT id, v FROM t ORDER BY id'),
	"1|updated\n2|inserted again", "n2 holds n1's rows");
is($n2->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'), '0',
	'n2 recorded no conflict') or diag(conflict_history_of($n2));

# The node goes on replicating.
$n1->safe_psql('postgres', "UPDATE t SET v = 'later' WHERE id = 1");
ok(wait_for_apply_one($n2, $sub, $n1), 'n2 applies later changes');
is($n2->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'later', 'n2 holds the later update');

$_->stop foreach ($n2, $n1);
done_testing();
