# A transaction of any size applies, whatever max_locks_per_transaction
# is.  In a database with several subscriptions (any 3-node mesh) apply
# locks each change's key until its transaction ends; before, a big
# remote transaction ran out of the lock table ("out of shared memory",
# HINT: increase max_locks_per_transaction) and its subscription stayed
# down for good.  Now a transaction that holds many key locks locks its
# tables whole instead (apply/key_lock.c).
#
# Three nodes with max_locks_per_transaction at its minimum (10): one node
# commits an INSERT of 20,000 rows, an UPDATE of all of them and a DELETE
# of half, each as one transaction; both others apply them.  The times
# are printed, not asserted.
#
# Then two nodes commit batches of 40 rows into one table at once, and the
# third applies both streams.  Before, a worker holding more than 8 key
# locks waited to lock the table whole while holding it shared, and two
# workers doing so deadlocked (one retried its transaction): now a worker
# only tries, and goes on with key locks while the other holds the table.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $rows = 20_000;
my @nodes = concord_nodes(3, prefix => 'big', extra_conf => 'max_locks_per_transaction = 10');
setup_mesh(\@nodes, 'CREATE TABLE t (id int PRIMARY KEY, v text, n int);', ['t']);
my ($a, $b, $c) = @nodes;

my @steps = (
	[ 'INSERT', "INSERT INTO t SELECT g, 'x' || g, 0 FROM generate_series(1, $rows) g",
	  "SELECT count(*) || ':' || sum(n) FROM t", "$rows:0" ],
	[ 'UPDATE', 'UPDATE t SET n = n + 1',
	  "SELECT count(*) || ':' || sum(n) FROM t", "$rows:$rows" ],
	[ 'DELETE', 'DELETE FROM t WHERE id % 2 = 0',
	  "SELECT count(*) || ':' || sum(n) FROM t", ($rows / 2) . ':' . ($rows / 2) ],
);
foreach my $step (@steps)
{
	my ($what, $sql, $check, $want) = @$step;
	$a->safe_psql('postgres', $sql);
	my $start = time;
	wait_for_apply_all(\@nodes, label => "the $what");
	diag(sprintf("%s of %d rows in one transaction applied on two nodes in %.1f s",
			$what, $rows, time - $start));
	foreach my $n ($b, $c)
	{
		is($n->safe_psql('postgres', $check), $want,
			$n->name . ": the $what of $rows rows in one transaction is applied");
	}
}
foreach my $n ($b, $c)
{
	is($n->safe_psql('postgres',
			q{SELECT count(*) FROM concord.subscription_status WHERE status <> 'replicating'}),
		'0', $n->name . ': every subscription replicates');
}

# --- two streams of batches into one table ----------------------------------
my $offset = -s $c->logfile;
my @writers = map {
	my $base = 100_000 * ($_ + 1);
	start_psql($nodes[$_], qq{
		DO \$\$
		BEGIN
			FOR i IN 0 .. 59 LOOP
				INSERT INTO t SELECT $base + i * 40 + g, 'batch', 0 FROM generate_series(1, 40) g;
				COMMIT;
			END LOOP;
		END
		\$\$;
	});
} (0, 1);
foreach my $h (@writers)
{
	my ($rc, $out, $err) = finish_psql($h);
	is($rc, 0, 'a writer committed its 60 batches') or diag($err);
}
wait_for_apply_all(\@nodes, label => 'the batches');
is($c->safe_psql('postgres', q{SELECT count(*) FROM t WHERE v = 'batch'}), '4800',
	'big3 applied both streams of batches');
my $log = substr(slurp_file($c->logfile), $offset);
my $deadlocks = () = $log =~ /deadlock detected/g;
is($deadlocks, 0, 'the two apply workers never deadlocked on the table lock');

done_testing();
