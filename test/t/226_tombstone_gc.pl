# Tombstone removal and the peer that comes back after its tombstones are
# gone, in a 3-node mesh (concord.tombstone_gc_delay = 0).
#
# Phase 1, confirmed removal: n1 deletes row 1; as long as n2 and n3 have
# not written anything after applying the delete, concord.tombstone_gc()
# keeps its tombstone on every node; once both wrote after applying a later
# change of n1 (their SEEN vectors confirm the delete), it is removed
# everywhere, and concord.tombstone_gap stays empty.
# Phase 2, forced removal: n1 deletes row 4 while partitioned, n2 updates
# row 4 later (concurrently); with concord.tombstone_retention = 2s, n1's
# GC removes the unconfirmed tombstone and records gaps for n2 and n3.
# After healing, n1 refuses n2's update (subscription down, last_error says
# to resynchronize) instead of dropping it as update_missing; n2 and n3
# keep row 4 (the later update wins); resynchronizing the table on n1 from
# n2 brings row 4 back and the subscription replicates again: all equal.
# Phase 3 (review #21): a write-only peer n4 (it subscribes to nothing, n1
# subscribes to it) never confirms n1's deletes, so a forced removal
# records a gap for it too; its transactions carry no vector of n1 and
# were refused for good, although it never follows n1's deletes at all.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(3, extra_conf => "concord.tombstone_gc_delay = 0\n");
my ($n1, $n2, $n3) = @nodes;

setup_mesh(\@nodes, "CREATE TABLE t (id int PRIMARY KEY, v text);\n", ['t']);
$n1->safe_psql('postgres', "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 6) g");
wait_for_apply_all(\@nodes, label => 'rows');

sub tombstones
{
	my ($n) = @_;
	return $n->safe_psql('postgres', 'SELECT count(*) FROM concord.tombstone');
}

sub gc
{
	my ($n) = @_;
	return $n->safe_psql('postgres', 'SELECT concord.tombstone_gc()');
}

# Poll until $n's clock is past $ts plus $secs seconds (confirmations and
# retention are measured on commit timestamps).
sub clock_past
{
	my ($n, $ts, $secs) = @_;
	return $n->poll_query_until('postgres',
		"SELECT clock_timestamp() > '$ts'::timestamptz + interval '$secs s'");
}

# --- phase 1: removal once every peer confirmed --------------------------
$n1->safe_psql('postgres', 'DELETE FROM t WHERE id = 1');
my $del_ts = $n1->safe_psql('postgres',
	"SELECT pg_xact_commit_timestamp(xmin) FROM concord.tombstone");
wait_for_apply_all(\@nodes, label => 'delete applied');
is(tombstones($_), '1', 'phase 1: a tombstone on ' . $_->name) foreach @nodes;
is(gc($_), '0', 'phase 1: nothing confirmed yet, kept on ' . $_->name) foreach @nodes;

# n1 writes again a second later; n2 and n3 write after applying that.
ok(clock_past($n1, $del_ts, 1), 'phase 1: a second after the delete');
$n1->safe_psql('postgres', "UPDATE t SET v = 'n1 later' WHERE id = 6");
wait_for_apply_all(\@nodes, label => 'n1 later write applied');
is(gc($_), '0', 'phase 1: n2 and n3 wrote nothing since, kept on ' . $_->name) foreach @nodes;
$n2->safe_psql('postgres', "UPDATE t SET v = 'n2 confirms' WHERE id = 2");
$n3->safe_psql('postgres', "UPDATE t SET v = 'n3 confirms' WHERE id = 3");
wait_for_apply_all(\@nodes, label => 'confirmations applied');
is(gc($n1), '1', 'phase 1: n1 removes its tombstone once n2 and n3 confirmed');
is(gc($n2), '1', "phase 1: n2 removes n1's tombstone once n3 confirmed");
is(gc($n3), '1', "phase 1: n3 removes n1's tombstone once n2 confirmed");
is(tombstones($_), '0', 'phase 1: no tombstone left on ' . $_->name) foreach @nodes;
is($_->safe_psql('postgres', 'SELECT count(*) FROM concord.tombstone_gap'), '0',
	'phase 1: no gap on ' . $_->name) foreach @nodes;
checksums_match(\@nodes, ['t'], 'phase 1');

# --- phase 2: forced removal, the returning peer is refused ---------------
partition_nodes(\@nodes, 'phase 2');
$n1->safe_psql('postgres', 'DELETE FROM t WHERE id = 4');
$del_ts = $n1->safe_psql('postgres',
	"SELECT pg_xact_commit_timestamp(xmin) FROM concord.tombstone");
$n2->safe_psql('postgres', "UPDATE t SET v = 'n2, after the delete' WHERE id = 4");
$n1->safe_psql('postgres', "ALTER SYSTEM SET concord.tombstone_retention = '2s'; SELECT pg_reload_conf()");
is(gc($n1), '0', 'phase 2: a young unconfirmed tombstone is kept');
ok(clock_past($n1, $del_ts, 3), 'phase 2: the tombstone is older than the retention');
is(gc($n1), '1', 'phase 2: removed past the retention');
is($n1->safe_psql('postgres',
		"SELECT string_agg(peer || ':' || origin || ':' || (removed_upto = '$del_ts'), ',' ORDER BY peer)"
		  . ' FROM concord.tombstone_gap'),
	'n2:n1:true,n3:n1:true', 'phase 2: gaps recorded for the two peers that had not confirmed');

_enable_all();
sub _enable_all
{
	foreach my $n (@nodes)
	{
		$n->safe_psql('postgres',
			"SELECT concord.alter_subscription_enable(" . quote_literal($_->{name}) . ")")
		  foreach subscriptions_of($n);
	}
	return;
}
ok($n1->poll_query_until('postgres',
		q{SELECT status = 'down' FROM concord.subscription_status WHERE subscription_name = 'sub_n1_n2'}),
	"phase 2: n1 refuses n2's update written before n2 applied the delete");
my $err = $n1->safe_psql('postgres',
	q{SELECT last_error FROM concord.subscription_status WHERE subscription_name = 'sub_n1_n2'});
like($err, qr/node "n2" wrote this transaction before applying deletions of node "n1" whose tombstones were removed here/,
	'phase 2: last_error says why');
like($err, qr/Resynchronize/, 'phase 2: last_error says to resynchronize');
is($n1->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 4'), '0',
	'phase 2: nothing applied blindly on n1');
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1) && wait_for_apply_one($n3, 'sub_n3_n1', $n1)
	  && wait_for_apply_one($n3, 'sub_n3_n2', $n2),
	'phase 2: n2 and n3 caught up');
is($_->safe_psql('postgres', 'SELECT v FROM t WHERE id = 4'), 'n2, after the delete',
	'phase 2: the later update wins on ' . $_->name) foreach ($n2, $n3);

# the fix the error asks for
$n1->safe_psql('postgres',
	"SELECT concord.alter_subscription_resynchronize_table('sub_n1_n2', 't')");
ok($n1->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'sub_n1_n2'}),
	'phase 2: replicating again after the resynchronization');
wait_for_apply_all(\@nodes, label => 'phase 2 healed');
is($n1->safe_psql('postgres', 'SELECT v FROM t WHERE id = 4'), 'n2, after the delete',
	'phase 2: row 4 is back on n1');
checksums_match(\@nodes, ['t'], 'phase 2');

# --- phase 3: a write-only peer is not refused ----------------------------
my $n4 = concord_node('n4', extra_conf => "concord.tombstone_gc_delay = 0\n");
$n4->safe_psql('postgres', "CREATE TABLE t (id int PRIMARY KEY, v text);
	SELECT concord.replication_set_add_table('default', 't');");
subscribe($n1, $n4, name => 'sub_n1_n4', synchronize_data => 0);
wait_replicating([$n1], 'phase 3');
$n4->safe_psql('postgres', "INSERT INTO t VALUES (100, 'n4, before')");
ok(wait_for_apply_one($n1, 'sub_n1_n4', $n4), 'phase 3: n1 applies n4');
$n1->safe_psql('postgres', 'DELETE FROM t WHERE id = 5');
$del_ts = $n1->safe_psql('postgres',
	"SELECT max(pg_xact_commit_timestamp(xmin)) FROM concord.tombstone");
ok(clock_past($n1, $del_ts, 3), 'phase 3: the tombstone is older than the retention');
gc($n1);
like($n1->safe_psql('postgres', q{SELECT string_agg(peer, ',' ORDER BY peer) FROM concord.tombstone_gap}),
	qr/n4/, 'phase 3: a gap is recorded for n4, which never confirms');
$n4->safe_psql('postgres', "INSERT INTO t VALUES (101, 'n4, after the gap')");
ok(wait_for_apply_one($n1, 'sub_n1_n4', $n4), 'phase 3: n1 applies n4 after the gap');
is($n1->safe_psql('postgres', 'SELECT v FROM t WHERE id = 101'), 'n4, after the gap',
	"phase 3: n4's write is applied");
is($n1->safe_psql('postgres',
		q{SELECT status FROM concord.subscription_status WHERE subscription_name = 'sub_n1_n4'}),
	'replicating', 'phase 3: the subscription from n4 replicates');

done_testing();
