# Tombstones after the transaction counter wrapped around.  Once it has,
# freezing makes a tombstone's version unknown (its raw xmin may name a
# later transaction), and a frozen tombstone can only be removed, with
# nothing to say which peer had not confirmed it.  Before, such a
# tombstone went silently: a peer's change written before it applied the
# delete was then applied as if it followed it (update_missing, the row
# left absent here while the peer kept it), the subscription replicating
# all along.  Now, after a wraparound, a tombstone not every peer
# confirmed is removed with its gap rows before vacuum may freeze it
# (older than half of vacuum_freeze_min_age), and apply refuses that
# peer's older change as after a removal past concord.tombstone_retention.
#
# Two nodes (vacuum_freeze_min_age = 1000, tombstone_gc_delay = 0,
# retention 0: forever); n1's epoch set to 1 with pg_resetwal (as after a
# wraparound).  Apart, n1 deletes row 2 and n2 updates it.
#  1. GC keeps the young tombstone; after 600 transactions on n1 it
#     removes it and records a gap for n2 with the delete's time.
#  2. Together again, n1 refuses n2's update (down, "whose tombstones were
#     removed here"), and the resynchronization the error asks for brings
#     n2's row back: the nodes are equal.
#  3. A tombstone frozen by hand (VACUUM FREEZE) before GC saw it goes
#     with a WARNING that says so.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(2, prefix => 'fz',
	extra_conf => "concord.tombstone_gc_delay = 0\nvacuum_freeze_min_age = 1000\n");
my ($n1, $n2) = @nodes;

# As after a wraparound: epoch 1 (before any slot: pg_resetwal starts a
# new WAL).
$n1->stop('fast');
command_ok([ 'pg_resetwal', '-e', '1', $n1->data_dir ], 'pg_resetwal: epoch 1 on fz1');
$n1->start;
is($n1->safe_psql('postgres', 'SELECT txid_current() >= 4294967296'), 't', 'fz1 is past its first wraparound');

setup_mesh(\@nodes, 'CREATE TABLE t (id int PRIMARY KEY, v text);', ['t']);
$n1->safe_psql('postgres', "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 4) g");
wait_for_apply_all(\@nodes, label => 'rows');

sub gc
{
	my ($n) = @_;
	return $n->safe_psql('postgres', 'SELECT concord.tombstone_gc()');
}

# 1. Removed, with a gap row, before it can be frozen.
partition_nodes(\@nodes, 'apart');
$n1->safe_psql('postgres', 'DELETE FROM t WHERE id = 2');
my $del_ts = $n1->safe_psql('postgres', 'SELECT pg_xact_commit_timestamp(xmin) FROM concord.tombstone');
$n2->safe_psql('postgres', "UPDATE t SET v = 'fz2, after the delete' WHERE id = 2");
is(gc($n1), '0', 'a young tombstone that fz2 has not confirmed is kept');
$n1->safe_psql('postgres', q{
	DO $$
	BEGIN
		FOR i IN 1..600 LOOP
			PERFORM pg_catalog.txid_current();
			COMMIT;
		END LOOP;
	END $$;});
is(gc($n1), '1', 'older than half of vacuum_freeze_min_age, it is removed');
is($n1->safe_psql('postgres',
		"SELECT string_agg(peer || ':' || origin || ':' || (removed_upto = '$del_ts'), ',') FROM concord.tombstone_gap"),
	'fz2:fz1:true', 'with a gap row for fz2, at the time of the delete');

# 2. fz2's older update is refused, then the resynchronization mends it.
foreach my $n (@nodes)
{
	$n->safe_psql('postgres', "SELECT concord.alter_subscription_enable(" . quote_literal($_->{name}) . ")")
	  foreach subscriptions_of($n);
}
ok($n1->poll_query_until('postgres',
		q{SELECT status = 'down' AND last_error LIKE '%node "fz2" wrote this transaction before applying deletions of node "fz1" whose tombstones were removed here%'
		    FROM concord.subscription_status WHERE subscription_name = 'sub_fz1_fz2'}),
	"fz1 refuses fz2's update written before it applied the delete")
  or diag($n1->safe_psql('postgres', 'SELECT * FROM concord.subscription_status'));
is($n1->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 2'), '0', 'nothing applied blindly on fz1');
$n1->safe_psql('postgres', "SELECT concord.alter_subscription_resynchronize_table('sub_fz1_fz2', 't')");
ok($n1->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'sub_fz1_fz2'}),
	'replicating again after the resynchronization');
wait_for_apply_all(\@nodes, label => 'mended');
is($n1->safe_psql('postgres', 'SELECT v FROM t WHERE id = 2'), 'fz2, after the delete', "fz2's row is back on fz1");
checksums_match(\@nodes, ['t'], 'after the resynchronization');

# 3. A tombstone frozen by hand before GC saw it.
partition_nodes(\@nodes, 'apart again');
$n1->safe_psql('postgres', 'DELETE FROM t WHERE id = 3');
$n1->safe_psql('postgres', 'VACUUM FREEZE concord.tombstone');
my ($ret, $out, $err) = $n1->psql('postgres', 'SELECT concord.tombstone_gc()');
is($out, '1', 'the frozen tombstone is removed');
like($err, qr/WARNING:  concord removed 1 tombstones whose version freezing had made unknown/,
	'with a WARNING that says its version was lost');
heal_nodes(\@nodes, 'together again');
checksums_match(\@nodes, ['t'], 'after the frozen tombstone');

done_testing();
