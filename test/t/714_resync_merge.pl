# Resynchronizing a table is a repair (issue 13, point 4; review #5):
# concord.alter_subscription_resynchronize_table() merges the provider's
# rows in, key by key with their versions, instead of emptying the table.
# Three nodes of a mesh; rs3 resynchronizes table r from rs1 while
#  - rs1 has not yet received rs3's own writes (its subscription to rs3
#    is disabled): a row rs3 inserted and one it updated stay on rs3 (the
#    old TRUNCATE lost them for good: rs1 never sends rs3's changes back);
#  - rs1 has not yet received an update made on rs2 that rs3 applied: it
#    stays on rs3 (the provider's older row does not win over it);
#  - rows deleted on rs3 by hand (under an origin of their own, no
#    tombstone) come back with rs1's version (origin and commit time);
#  - rows alike on both keep their version (the old copy gave them the
#    copy's commit time);
#  - writers on rs2 and rs3 keep writing other keys during the merge.
# Every write is recorded in concord.repair_history under the
# subscription's name; after the links come back every node holds the
# same rows.
# A row changed by hand on rs3 under an origin of no node is mended too.
# Under first_update_wins (and replica_priority, whose resolver reads the
# nodes' priorities): a write rs3 made after applying rs1's row stays
# (rs3 had applied the provider's version: not a conflict, though the
# provider's row is the earlier), and a write concurrent with one of
# rs1's that rs3 had not applied is decided by the resolver as apply
# decides it: the nodes converge; rows of that table (owned by a role
# that is no superuser) that rs3 had not received are updated in a group.
# A table with a unique constraint besides its key is merged; when the
# provider's rows swapped values of it (a clash key by key), it is copied.
# Then a table whose rows were written on rs1 before it joined the set
# (one bulk INSERT, then single-row INSERTs, one UPDATE) is resynchronized
# on rs3: every row arrives, each with rs1's version (the bulk ones in
# one transaction per version).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(3, prefix => 'rs');
my ($n1, $n2, $n3) = @nodes;
setup_mesh(\@nodes, q{CREATE TABLE r (id int PRIMARY KEY, v text, n int DEFAULT 0);}, ['r']);
$n1->safe_psql('postgres', q{INSERT INTO r SELECT g, 'row ' || g FROM generate_series(1, 400) g});
wait_for_apply_all(\@nodes, label => 'rows everywhere');

sub version_of
{
	my ($node, $id) = @_;
	return $node->safe_psql('postgres',
		"SELECT v.origin_node || ' ' || v.commit_time FROM r, concord.row_version(r.xmin) v WHERE id = $id");
}

my $untouched = version_of($n3, 50);

# rs1 hears neither rs3 nor rs2 for a while.
link_down($n1, $n3);
link_down($n1, $n2);

$n3->safe_psql('postgres', q{INSERT INTO r VALUES (1001, 'rs3 new');
	UPDATE r SET v = 'rs3 upd' WHERE id = 5});
$n2->safe_psql('postgres', q{UPDATE r SET v = 'rs2 upd' WHERE id = 7});
ok($n3->poll_query_until('postgres', q{SELECT v = 'rs2 upd' FROM r WHERE id = 7}),
	"rs2's update reached rs3");
$n1->safe_psql('postgres', q{UPDATE r SET v = 'rs1 upd' WHERE id = 9});
ok($n3->poll_query_until('postgres', q{SELECT v = 'rs1 upd' FROM r WHERE id = 9}),
	"rs1's update reached rs3");

# Rows lost on rs3 (no tombstone, not sent anywhere).
$n3->safe_psql('postgres', q{
	SELECT pg_replication_origin_create('by_hand');
	SELECT pg_replication_origin_session_setup('by_hand');
	SET session_replication_role = replica;
	DELETE FROM r WHERE id IN (20, 21);
	UPDATE r SET v = 'by hand' WHERE id = 30;
	SELECT pg_replication_origin_session_reset();
});
is(count_of($n3, 'r', 'id IN (20, 21)'), '0', 'rows 20 and 21 are gone from rs3');

# Writers on other keys during the merge.
my $writes = join("\n", map {
	"UPDATE r SET n = n + 1 WHERE id = " . (100 + $_ % 50) . ";"
} 1 .. 400);
my $w2 = start_psql($n2, $writes);
my $w3 = start_psql($n3, join("\n", map {
	"UPDATE r SET n = n + 1 WHERE id = " . (200 + $_ % 50) . ";"
} 1 .. 400));

$n3->safe_psql('postgres', q{SELECT concord.alter_subscription_resynchronize_table('sub_rs3_rs1', 'r')});
$n3->safe_psql('postgres', q{SELECT concord.wait_for_subscription_sync_complete('sub_rs3_rs1')},
	timeout => $ConcordTest::TIMEOUT);
foreach my $w ($w2, $w3)
{
	my ($rc, undef, $err) = finish_psql($w);
	is($rc, 0, 'a writer ended without error') or diag($err);
}
ok($n3->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'sub_rs3_rs1'}),
	'rs3 replicates from rs1 again');

is($n3->safe_psql('postgres', q{SELECT v FROM r WHERE id = 1001}), 'rs3 new',
	"rs3's own insert, not yet on rs1, is still on rs3");
is($n3->safe_psql('postgres', q{SELECT v FROM r WHERE id = 5}), 'rs3 upd',
	"rs3's own update, not yet on rs1, is still on rs3");
is($n3->safe_psql('postgres', q{SELECT v FROM r WHERE id = 7}), 'rs2 upd',
	"rs2's update, not yet on rs1, is still on rs3");
is($n3->safe_psql('postgres', q{SELECT string_agg(v, ',' ORDER BY id) FROM r WHERE id IN (20, 21)}),
	'row 20,row 21', 'the rows lost on rs3 are back');
is(version_of($n3, 20), version_of($n1, 20), "row 20 has rs1's version on rs3");
is($n3->safe_psql('postgres', q{SELECT v FROM r WHERE id = 30}), 'row 30',
	'a row changed by hand under an origin of no node is mended');
is(version_of($n3, 30), version_of($n1, 30), "row 30 has rs1's version on rs3");
is(version_of($n3, 50), $untouched, 'a row alike on both kept its version');
is($n3->safe_psql('postgres', q{SELECT string_agg(key->>'id' || ':' || action, ',' ORDER BY (key->>'id')::int)
	FROM concord.repair_history WHERE subscription_name = 'sub_rs3_rs1' AND run_id IS NULL}),
	'20:insert,21:insert,30:update', 'the merge wrote the two lost rows and the changed one, nothing else, recorded under the subscription');
is($n3->safe_psql('postgres', q{SELECT count(*) FROM concord.tombstone}), '0',
	'no tombstone was made');

link_up($n1, $n3);
link_up($n1, $n2);
wait_replicating(\@nodes, 'links back');
wait_for_apply_all(\@nodes, label => 'links back');
checksums_match(\@nodes, ['r'], 'after the merge');
is($n1->safe_psql('postgres', q{SELECT string_agg(v, ',' ORDER BY id) FROM r WHERE id IN (5, 7, 9, 1001)}),
	'rs3 upd,rs2 upd,rs1 upd,rs3 new', 'every write of the partition holds on rs1');

# --- first_update_wins and replica_priority ---------------------------------
run_on_all(\@nodes, q{CREATE ROLE app;
	CREATE TABLE f (id int PRIMARY KEY, v text);
	ALTER TABLE f OWNER TO app;
	CREATE TABLE pr (id int PRIMARY KEY, v text);
	SELECT concord.set_conflict_resolver('f', 'first_update_wins');
	SELECT concord.set_conflict_resolver('pr', 'replica_priority');});
add_tables(\@nodes, ['f', 'pr']);
$n1->safe_psql('postgres', q{INSERT INTO f SELECT g, 'rs1 ' || g FROM generate_series(1, 10) g;
	INSERT INTO pr SELECT g, 'rs1 ' || g FROM generate_series(1, 10) g});
wait_for_apply_all(\@nodes, label => 'f and pr everywhere');
link_down($n1, $n3);
$n3->safe_psql('postgres', q{UPDATE f SET v = 'rs3 after rs1' WHERE id = 1});
link_down($n3, $n1);
$n3->safe_psql('postgres', q{UPDATE f SET v = 'rs3 first' WHERE id = 2; UPDATE pr SET v = 'rs3' WHERE id = 2});
$n1->safe_psql('postgres', q{UPDATE f SET v = 'rs1 second' WHERE id = 2; UPDATE pr SET v = 'rs1' WHERE id = 2});
$n1->safe_psql('postgres', q{UPDATE f SET v = 'rs1 late' WHERE id BETWEEN 5 AND 8});
$n3->safe_psql('postgres', q{SELECT concord.alter_subscription_resynchronize_table('sub_rs3_rs1', 'f');
	SELECT concord.alter_subscription_resynchronize_table('sub_rs3_rs1', 'pr')});
link_up($n3, $n1);
$n3->safe_psql('postgres', q{SELECT concord.wait_for_subscription_sync_complete('sub_rs3_rs1')},
	timeout => $ConcordTest::TIMEOUT);
is($n3->safe_psql('postgres', q{SELECT v FROM f WHERE id = 1}), 'rs3 after rs1',
	"first_update_wins: rs3's write made after applying rs1's row stays");
is($n3->safe_psql('postgres', q{SELECT v FROM f WHERE id = 2}), 'rs3 first',
	"first_update_wins: of two concurrent writes the first stays");
is($n3->safe_psql('postgres', q{SELECT string_agg(v, ',' ORDER BY id) FROM f WHERE id BETWEEN 5 AND 8}),
	'rs1 late,rs1 late,rs1 late,rs1 late', "rs1's updates that rs3 had not applied are merged in");
is($n3->safe_psql('postgres', q{SELECT count(*) FROM concord.repair_history
	WHERE subscription_name = 'sub_rs3_rs1' AND relation = 'public.f' AND action = 'update'
	  AND (key->>'id')::int BETWEEN 5 AND 8 AND origin_node = 'rs1'}), '4',
	'recorded as updates with the version of rs1');
my $fv = q{SELECT string_agg(v.origin_node || ' ' || v.commit_time, ',' ORDER BY id)
	FROM f, concord.row_version(f.xmin) v WHERE id BETWEEN 5 AND 8};
is($n3->safe_psql('postgres', $fv), $n1->safe_psql('postgres', $fv), "the updated rows carry rs1's versions");
link_up($n1, $n3);
wait_replicating(\@nodes, 'f and pr links back');
wait_for_apply_all(\@nodes, label => 'f and pr links back');
checksums_match(\@nodes, ['f', 'pr'], 'first_update_wins and replica_priority after the merge');
is($n1->safe_psql('postgres', q{SELECT string_agg(v, ',' ORDER BY id) FROM f WHERE id IN (1, 2)}),
	'rs3 after rs1,rs3 first', 'rs1 holds the same under first_update_wins');

# --- a unique constraint besides the key ------------------------------------
run_on_all(\@nodes, q{CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, v text)});
add_tables(\@nodes, ['u']);
$n1->safe_psql('postgres', q{INSERT INTO u SELECT g, 'a' || g, 'rs1' FROM generate_series(1, 5) g});
wait_for_apply_all(\@nodes, label => 'u everywhere');
link_down($n3, $n1);
$n1->safe_psql('postgres', q{UPDATE u SET v = 'rs1 later' WHERE id = 3});
$n3->safe_psql('postgres', q{SELECT concord.alter_subscription_resynchronize_table('sub_rs3_rs1', 'u')});
link_up($n3, $n1);
$n3->safe_psql('postgres', q{SELECT concord.wait_for_subscription_sync_complete('sub_rs3_rs1')},
	timeout => $ConcordTest::TIMEOUT);
is($n3->safe_psql('postgres', q{SELECT action FROM concord.repair_history
	WHERE relation = 'public.u' AND subscription_name = 'sub_rs3_rs1'}), 'update',
	'a table with another unique constraint is merged');
# rs1 swaps two emails (through a third value, in three transactions):
# merged key by key, either key clashes with the other's old email here.
link_down($n3, $n1);
$n1->safe_psql('postgres', "UPDATE u SET email = 'tmp' WHERE id = 1");
$n1->safe_psql('postgres', "UPDATE u SET email = 'a1' WHERE id = 2");
$n1->safe_psql('postgres', "UPDATE u SET email = 'a2' WHERE id = 1");
my $log_at = -s $n3->logfile;
$n3->safe_psql('postgres', q{SELECT concord.alter_subscription_resynchronize_table('sub_rs3_rs1', 'u')});
link_up($n3, $n1);
$n3->safe_psql('postgres', q{SELECT concord.wait_for_subscription_sync_complete('sub_rs3_rs1')},
	timeout => $ConcordTest::TIMEOUT);
like(substr(slurp_file($n3->logfile), $log_at), qr/resynchronizing public\.u by a copy: duplicate key value/,
	'a clash on the other unique constraint: the table is copied instead');
is(ConcordTest::checksum($n3, 'u'), ConcordTest::checksum($n1, 'u'), 'u on rs3 equals rs1 after the copy');
ok($n3->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'sub_rs3_rs1'}),
	'and replicates');

# --- a table that joined the set after its rows were written --------------
run_on_all(\@nodes, q{CREATE TABLE late (id int PRIMARY KEY, v text, g int GENERATED ALWAYS AS (id * 2) STORED)});
$n1->safe_psql('postgres', q{INSERT INTO late (id, v) SELECT g, 'bulk ' || g FROM generate_series(1, 3000) g});
$n1->safe_psql('postgres', "INSERT INTO late (id, v) VALUES ($_, 'single $_')") foreach 3001 .. 3020;
$n1->safe_psql('postgres', q{UPDATE late SET v = 'updated' WHERE id = 10});
add_tables(\@nodes, ['late']);
is(count_of($n3, 'late'), '0', 'rs3 has none of the rows written before the table joined the set');
$n3->safe_psql('postgres', q{SELECT concord.alter_subscription_resynchronize_table('sub_rs3_rs1', 'late')});
$n3->safe_psql('postgres', q{SELECT concord.wait_for_subscription_sync_complete('sub_rs3_rs1')},
	timeout => $ConcordTest::TIMEOUT);
is(ConcordTest::checksum($n3, 'late'), ConcordTest::checksum($n1, 'late'), 'rs3 holds the rows of rs1');
my $versions = q{SELECT string_agg(v.origin_node || ' ' || v.commit_time, ',' ORDER BY id)
	FROM late, concord.row_version(late.xmin) v WHERE id IN (1, 10, 3000, 3001, 3020)};
is($n3->safe_psql('postgres', $versions), $n1->safe_psql('postgres', $versions),
	"each row has rs1's version on rs3 (bulk, updated, single)");
is($n3->safe_psql('postgres', q{SELECT count(*) FROM concord.repair_history
	WHERE subscription_name = 'sub_rs3_rs1' AND relation = 'public.late' AND action = 'insert'}), '3020',
	'every row recorded as inserted');
my $distinct = q{SELECT count(DISTINCT (v.origin_node, v.commit_time)) FROM late, concord.row_version(late.xmin) v};
is($n3->safe_psql('postgres', $distinct), '22', 'the 22 versions of rs1 (bulk, updated, singles)');
ok($n3->safe_psql('postgres', q{SELECT count(DISTINCT xmin::text) FROM late}) < 100,
	'rows of one version were written together, not one transaction each');
$n1->safe_psql('postgres', q{UPDATE late SET v = 'after' WHERE id = 3000});
ok($n3->poll_query_until('postgres', q{SELECT v = 'after' FROM late WHERE id = 3000}),
	"rs1's later change reaches rs3");
is($n3->safe_psql('postgres', q{SELECT count(*) FROM concord.conflict_history WHERE relation::text LIKE '%late%'}),
	'0', 'and is no conflict');

done_testing();
