# Rings under conflicts (issue 17): a change the middle node of a ring
# receives but does not apply must still reach the nodes after it.
# Three nodes in a ring n1 -> n2 -> n3 -> n1 (each subscribes to its
# predecessor, forward_origins '{all}'), last_update_wins, table rt (id int
# PRIMARY KEY, v text).  Row 1 is written and replicated; every link is
# cut (subscriptions disabled); then, one transaction each and in this
# order: n2 deletes row 1, n3 updates it, n1 deletes it.  Healed, the
# last change by commit time is n1's DELETE: every node must end without
# row 1.  n1's DELETE reaches n2 first, which finds no row (its own
# earlier DELETE) and applies nothing: if n2 does not pass it on, n3
# keeps its UPDATE for good.
# Then a skip resolver in the middle, and a keep_local resolver in the
# middle with a large value the UPDATE left unchanged (see below).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(3);
my ($n1, $n2, $n3) = @nodes;
run_on_all(\@nodes, q{
CREATE TABLE rt (id int PRIMARY KEY, v text NOT NULL);
CREATE TABLE lv (id int PRIMARY KEY, v text NOT NULL, big text NOT NULL);
ALTER TABLE lv ALTER big SET STORAGE EXTERNAL;
CREATE FUNCTION big_text(i int) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT string_agg(md5(i || ':' || g), '') FROM generate_series(1, 300) g $$;
});
add_tables(\@nodes, ['rt', 'lv']);
build_ring(\@nodes);
wait_replicating(\@nodes, 'ring built');
wait_sync_complete(\@nodes);

$n1->safe_psql('postgres', q{INSERT INTO rt VALUES (1, 'n1 ins')});
wait_for_apply_all(\@nodes, label => 'row 1 written');
is($_->safe_psql('postgres', 'SELECT v FROM rt WHERE id = 1'), 'n1 ins', 'row 1 on ' . $_->name) foreach @nodes;

partition_nodes(\@nodes, 'links cut');
$n2->safe_psql('postgres', q{DELETE FROM rt WHERE id = 1});
$n3->safe_psql('postgres', q{UPDATE rt SET v = 'n3 upd' WHERE id = 1});
$n1->safe_psql('postgres', q{DELETE FROM rt WHERE id = 1});
heal_nodes(\@nodes, 'healed');

foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM rt WHERE id = 1'), '0',
		$n->name . ": row 1 is gone (n1's DELETE is the last change)")
	  or diag(conflict_history_of($n));
}
checksums_match(\@nodes, ['rt'], 'healed');

# A skip resolver in the middle: n2 skips remote UPDATEs of rows it wrote
# concurrently (update_origin_differs).  Row 3 written and replicated; all
# links cut; n2 updates it, then n1.  Healed: n2 skips n1's UPDATE (its
# resolver's choice, kept in its history), but passes it on: n3 weighs it
# against n2's own UPDATE and, under last_update_wins, takes n1's, like n1.
$n1->safe_psql('postgres', q{INSERT INTO rt VALUES (3, 'n1 ins')});
wait_for_apply_all(\@nodes, label => 'row 3 written');
$n2->safe_psql('postgres', q{SELECT concord.set_conflict_resolver('rt', 'skip', NULL, 'update_origin_differs')});
partition_nodes(\@nodes, 'skip in the middle: links cut');
$n2->safe_psql('postgres', q{UPDATE rt SET v = 'n2 upd' WHERE id = 3});
$n1->safe_psql('postgres', q{UPDATE rt SET v = 'n1 upd' WHERE id = 3});
heal_nodes(\@nodes, 'skip in the middle: healed');
is($n1->safe_psql('postgres', 'SELECT v FROM rt WHERE id = 3'), 'n1 upd', 'skip in the middle: n1 keeps its later UPDATE');
is($n3->safe_psql('postgres', 'SELECT v FROM rt WHERE id = 3'), 'n1 upd',
	"skip in the middle: n3 received n1's UPDATE from n2, which skipped it, and took it as the later one")
  or diag(conflict_history_of($n3));
is($n2->safe_psql('postgres', q{
		SELECT v || ' ' || (SELECT string_agg(resolution, ',') FROM concord.conflict_history
		                     WHERE relation = 'public.rt' AND key->>'id' = '3')
		  FROM rt WHERE id = 3}),
	'n2 upd skip', 'skip in the middle: n2 keeps its own row, its history says skip');

# The same with a large value, and a resolver in the middle that keeps
# the local row without looking at the remote one: lv's big column
# (9.6 kB, stored out of line) is written by n1's INSERT (big_text(1));
# n2's resolver for lv is keep_local; all links cut; n2 replaces big
# (big_text(2)) and v; n1 then updates only v, which leaves big unchanged,
# so that its UPDATE carries no value of big.  n2 keeps its row and passes
# n1's UPDATE on; n3 applies n2's UPDATE first, then weighs n1's against
# it and takes it as the later one, as a whole row: big must be n1's
# (big_text(1)), which n3 cannot read from n2 (n2 holds its own version),
# so n2 passes the UPDATE on with big filled in, read from n1.
$n1->safe_psql('postgres', q{INSERT INTO lv VALUES (1, 'n1 ins', big_text(1))});
wait_for_apply_all(\@nodes, label => 'lv row 1 written');
$n2->safe_psql('postgres', q{SELECT concord.set_conflict_resolver('lv', 'keep_local', NULL, 'update_origin_differs')});
partition_nodes(\@nodes, 'large value: links cut');
$n2->safe_psql('postgres', q{UPDATE lv SET v = 'n2 upd', big = big_text(2) WHERE id = 1});
$n1->safe_psql('postgres', q{UPDATE lv SET v = 'n1 upd' WHERE id = 1});
heal_nodes(\@nodes, 'large value: healed');
my $lv_row = q{SELECT v || ' ' || CASE big WHEN big_text(1) THEN 'big 1' WHEN big_text(2) THEN 'big 2' ELSE md5(big) END FROM lv WHERE id = 1};
is($n1->safe_psql('postgres', $lv_row), 'n1 upd big 1', 'large value: n1 keeps its later UPDATE');
is($n3->safe_psql('postgres', $lv_row), 'n1 upd big 1',
	"large value: n3 took n1's UPDATE, passed on by n2, with n1's large value, not n2's")
  or diag(conflict_history_of($n3));
is($n2->safe_psql('postgres', $lv_row), 'n2 upd big 2', 'large value: n2 keeps its own row (keep_local)');

done_testing();
