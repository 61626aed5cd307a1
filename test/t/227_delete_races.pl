# Two DELETE races that once left nodes different (found by the
# randomized workload, test/t/260), last_update_wins, 3-node mesh:
#
# A: n1 deletes row 1, n3 updates it later, n2 deletes it later still;
#    n1 receives n2's DELETE before n3's UPDATE.  n2's DELETE finds no row
#    on n1 (delete_missing) and must renew n1's tombstone with its later
#    version, so that n3's UPDATE, which lies between the two deletes,
#    loses to it: the row is absent everywhere.
# C: n2 applies n1's DELETE and n3's later UPDATE of the same row at the
#    same time, in two apply workers: the DELETE's transaction is held
#    (an ENABLE ALWAYS trigger waits on an advisory lock) while the UPDATE
#    waits for it (on the key lock apply workers take); once released, the
#    UPDATE must see the DELETE's tombstone (update_deleted, the later UPDATE wins), not a stale
#    snapshot without it (update_missing, row left absent): the row holds
#    n3's update everywhere.
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
setup_mesh(\@nodes, q{
  CREATE TABLE a (id int PRIMARY KEY, v text NOT NULL);
  CREATE TABLE c (id int PRIMARY KEY, v text NOT NULL);
}, [ 'a', 'c' ]);
$n1->safe_psql('postgres', q{INSERT INTO a VALUES (1, 'init'); INSERT INTO c VALUES (1, 'init');});
wait_for_apply_all(\@nodes, label => 'rows');

sub enable
{
	my ($n, $sub) = @_;
	$n->safe_psql('postgres', "SELECT concord.alter_subscription_enable('$sub')");
	return;
}

sub rows_of
{
	my ($n, $t) = @_;
	return $n->safe_psql('postgres', "SELECT coalesce(string_agg(id || ':' || v, ','), 'none') FROM $t");
}

# --- A ---------------------------------------------------------------------
partition_nodes(\@nodes, 'A');
$n1->safe_psql('postgres', 'DELETE FROM a WHERE id = 1');
$n3->safe_psql('postgres', q{UPDATE a SET v = 'n3 update' WHERE id = 1});
$n2->safe_psql('postgres', 'DELETE FROM a WHERE id = 1');
enable($n1, 'sub_n1_n2');
ok(wait_for_apply_one($n1, 'sub_n1_n2', $n2), "A: n1 applied n2's DELETE first");
heal_nodes(\@nodes, 'A healed');
is(rows_of($_, 'a'), 'none', 'A: the latest DELETE wins on ' . $_->name) foreach @nodes;
is($n1->safe_psql('postgres', q{SELECT string_agg(conflict_type || ' ' || resolution, ',' ORDER BY conflict_id)
                                  FROM concord.conflict_history WHERE relation = 'public.a'}),
	'delete_missing apply_remote,update_deleted keep_local',
	"A: on n1, n2's DELETE renewed the tombstone, n3's UPDATE lost to it");

# --- C ---------------------------------------------------------------------
$n2->safe_psql('postgres', q{
  CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$;
  CREATE TRIGGER hold AFTER DELETE ON c FOR EACH ROW EXECUTE FUNCTION hold();
  ALTER TABLE c ENABLE ALWAYS TRIGGER hold;});
partition_nodes(\@nodes, 'C');
$n1->safe_psql('postgres', 'DELETE FROM c WHERE id = 1');
$n3->safe_psql('postgres', q{UPDATE c SET v = 'n3 later update' WHERE id = 1});
my $holder = $n2->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');
enable($n2, 'sub_n2_n1');
ok($n2->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity
	WHERE backend_type = 'concord apply' AND wait_event = 'advisory'}),
	"C: n2's apply of n1's DELETE is held");
enable($n2, 'sub_n2_n3');
# It waits for the DELETE's transaction: on the key lock apply workers
# take (an advisory lock), before it even looks for the row.
ok($n2->poll_query_until('postgres', q{SELECT count(*) = 2 FROM pg_stat_activity
	WHERE backend_type = 'concord apply' AND wait_event = 'advisory'}),
	"C: n2's apply of n3's UPDATE waits for the DELETE's transaction");
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$holder->quit;
heal_nodes(\@nodes, 'C healed');
is(rows_of($_, 'c'), "1:n3 later update", 'C: the later UPDATE wins on ' . $_->name) foreach @nodes;
is($n2->safe_psql('postgres', q{SELECT string_agg(conflict_type || ' ' || resolution, ',' ORDER BY conflict_id)
                                  FROM concord.conflict_history WHERE relation = 'public.c'}),
	'update_deleted apply_remote', "C: on n2, n3's UPDATE met the DELETE's tombstone");
checksums_match(\@nodes, [ 'a', 'c' ], 'converged');

done_testing();
