# Causality across paths (issue 18, SPEC §5): a change that arrives before
# the change it depends on, because they travel by different paths, is not
# lost.  Four nodes n1..n4 in a mesh (last_update_wins), table ct (id int
# PRIMARY KEY, v text).  A link is "down" while the subscription that is
# that link is disabled.
#
#  1. The UPDATE overtakes its INSERT.  n3's link from n1 is down; n1
#     inserts rows 1..50; n2 applies them and updates all 50; n3 receives
#     n2's updates first.  Pass: n3's subscription to n2 holds them (down,
#     its error saying it waits for node "n1"'s changes), n3 writes nothing
#     meanwhile; once the link is up, every node holds n2's updates, and no
#     node recorded a conflict.
#  2. The DELETE variant: n2 deletes what n1 inserted (rows 51..60) while
#     n3's link from n1 is down.  Pass: the rows are gone everywhere.
#  3. Two hops: n4's links from n1 and n2 are down; n1 inserts rows
#     61..70, n2 updates them, n3 (which has both) updates them again; n4
#     receives n3's updates first.  Pass: n4 holds them until the links are
#     up, then every node holds n3's updates, no conflict anywhere.
#  5. (run before 4) The UPDATE overtakes an INSERT that followed a
#     DELETE, under first_update_wins: n1 writes and deletes row 200
#     (everywhere), then, n3's link from n1 down, inserts it again; n2
#     updates it.  Pass: n3 holds the UPDATE, which meets the tombstone of
#     a delete its writer had seen, until the INSERT has come; then every
#     node holds n2's update, no conflict.
#  7. (run last) Two late UPDATEs meet a later version, two hops, under
#     first_update_wins: n4's links from n1 and n2 down; n1, n2 and n3
#     update row 300 in turn, each after applying the one before.  Pass:
#     every node holds n3's update, no conflict anywhere.
#  6. (run before 7) The slow link stopped for a minute: as 4 with the
#     default concord.causal_wait (60 s), the link kept down until n3 gave
#     up waiting, then restarted.  Pass: as 4.
#  4. The cause does not come in time: n3 waits 3 s at most
#     (concord.causal_wait); its link from n1 is down while n1 inserts rows
#     101..110 and n2 updates them.  Pass: after the wait n3 applies the
#     updates as the newer version (update_missing, apply_remote, with a
#     message saying so), before the link is up; when it is, n1's inserts
#     are older than them (n2 had seen them: known.c) and are skipped with
#     no conflict, and every node holds n2's updates.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(4);
my ($n1, $n2, $n3, $n4) = @nodes;
setup_mesh(\@nodes,
	q{CREATE TABLE ct (id int PRIMARY KEY, v text NOT NULL);
	  CREATE TABLE ct_fuw (id int PRIMARY KEY, v text NOT NULL);
	  SELECT concord.set_conflict_resolver('ct_fuw', 'first_update_wins');},
	[ 'ct', 'ct_fuw' ]);

# Polls until $name on $n is down with an error that waits for $origin.
sub holds
{
	my ($n, $name, $origin, $label) = @_;
	ok( $n->poll_query_until('postgres', qq{
			SELECT status = 'down'
			   AND last_error LIKE 'subscription "$name": waiting for the changes of node "$origin" up to %'
			  FROM concord.subscription_status WHERE subscription_name = '$name'}),
		"$label: $name holds the change, waiting for node \"$origin\"")
	  or diag(status_report(\@nodes));
	return;
}

sub rows
{
	my ($n, $from, $to) = @_;
	return $n->safe_psql('postgres',
		"SELECT count(*) || ' ' || coalesce(string_agg(DISTINCT v, ','), '') FROM ct WHERE id BETWEEN $from AND $to");
}

# --- 1. the UPDATE overtakes its INSERT ------------------------------------------
my $marks = history_marks(\@nodes);
link_down($n3, $n1);
$n1->safe_psql('postgres', q{INSERT INTO ct SELECT g, 'n1 ins' FROM generate_series(1, 50) g});
link_applied($n2, $n1, 'overtaking update');
$n2->safe_psql('postgres', q{UPDATE ct SET v = 'n2 upd' WHERE id BETWEEN 1 AND 50});
holds($n3, 'sub_n3_n2', 'n1', 'overtaking update');
is(rows($n3, 1, 50), '0 ', 'overtaking update: n3 wrote nothing meanwhile');
link_up($n3, $n1);
wait_replicating(\@nodes, 'overtaking update: link up');
wait_for_apply_all(\@nodes, label => 'overtaking update: link up');
is(rows($_, 1, 50), '50 n2 upd', 'overtaking update: ' . $_->name . " holds n2's updates")
  foreach @nodes;
no_conflicts_since(\@nodes, 'overtaking update', $marks);

# --- 2. the DELETE variant -----------------------------------------------------------
link_down($n3, $n1);
$n1->safe_psql('postgres', q{INSERT INTO ct SELECT g, 'n1 ins' FROM generate_series(51, 60) g});
link_applied($n2, $n1, 'overtaking delete');
$n2->safe_psql('postgres', q{DELETE FROM ct WHERE id BETWEEN 51 AND 60});
link_applied($n3, $n2, 'overtaking delete');
link_up($n3, $n1);
wait_replicating(\@nodes, 'overtaking delete: link up');
wait_for_apply_all(\@nodes, label => 'overtaking delete: link up');
is(rows($_, 51, 60), '0 ', 'overtaking delete: rows 51..60 are gone on ' . $_->name) foreach @nodes;

# --- 3. two hops -----------------------------------------------------------------------
$marks = history_marks(\@nodes);
link_down($n4, $n1);
link_down($n4, $n2);
$n1->safe_psql('postgres', q{INSERT INTO ct SELECT g, 'n1 ins' FROM generate_series(61, 70) g});
link_applied($n2, $n1, 'two hops');
link_applied($n3, $n1, 'two hops');
$n2->safe_psql('postgres', q{UPDATE ct SET v = 'n2 upd' WHERE id BETWEEN 61 AND 70});
link_applied($n3, $n2, 'two hops');
$n3->safe_psql('postgres', q{UPDATE ct SET v = 'n3 upd' WHERE id BETWEEN 61 AND 70});
ok( $n4->poll_query_until('postgres', q{
		SELECT status = 'down' AND last_error LIKE 'subscription "sub_n4_n3": waiting for the changes of node "n_"%'
		  FROM concord.subscription_status WHERE subscription_name = 'sub_n4_n3'}),
	'two hops: n4 holds n3\'s updates, waiting for node n1 or n2') or diag(status_report(\@nodes));
is(rows($n4, 61, 70), '0 ', 'two hops: n4 wrote nothing meanwhile');
link_up($n4, $n1);
link_up($n4, $n2);
wait_replicating(\@nodes, 'two hops: links up');
wait_for_apply_all(\@nodes, label => 'two hops: links up');
is(rows($_, 61, 70), '10 n3 upd', 'two hops: ' . $_->name . " holds n3's updates") foreach @nodes;
no_conflicts_since(\@nodes, 'two hops', $marks);

# --- 5. the UPDATE overtakes the INSERT after a DELETE -----------------------------------
# ct_fuw (first_update_wins): row 200 written and deleted by n1, replicated
# everywhere (a tombstone on every node); n3's link from n1 down; n1
# inserts row 200 again, n2 updates it; n3 receives the UPDATE, finds the
# tombstone of a delete its writer had seen, and holds it until the
# INSERT has come.  (Without the hold, first_update_wins let the earlier
# DELETE win on n3, and the late INSERT then left n3 with n1's row.)
$marks = history_marks(\@nodes);
$n1->safe_psql('postgres', q{INSERT INTO ct_fuw VALUES (200, 'n1 ins')});
wait_for_apply_all(\@nodes, label => 'insert after delete: row written');
$n1->safe_psql('postgres', q{DELETE FROM ct_fuw WHERE id = 200});
wait_for_apply_all(\@nodes, label => 'insert after delete: row deleted');
link_down($n3, $n1);
$n1->safe_psql('postgres', q{INSERT INTO ct_fuw VALUES (200, 'n1 again')});
link_applied($n2, $n1, 'insert after delete');
$n2->safe_psql('postgres', q{UPDATE ct_fuw SET v = 'n2 upd' WHERE id = 200});
holds($n3, 'sub_n3_n2', 'n1', 'insert after delete');
link_up($n3, $n1);
wait_replicating(\@nodes, 'insert after delete: link up');
wait_for_apply_all(\@nodes, label => 'insert after delete: link up');
is($_->safe_psql('postgres', 'SELECT v FROM ct_fuw WHERE id = 200'), 'n2 upd',
	'insert after delete: ' . $_->name . " holds n2's update") foreach @nodes;
no_conflicts_since(\@nodes, 'insert after delete', $marks);

# --- 4. the cause does not come in time ---------------------------------------------------
$n3->safe_psql('postgres', q{ALTER SYSTEM SET concord.causal_wait = '3s'; SELECT pg_reload_conf();});
link_down($n3, $n1);
$n1->safe_psql('postgres', q{INSERT INTO ct SELECT g, 'n1 ins' FROM generate_series(101, 110) g});
link_applied($n2, $n1, 'no cause in time');
$n2->safe_psql('postgres', q{UPDATE ct SET v = 'n2 upd' WHERE id BETWEEN 101 AND 110});
holds($n3, 'sub_n3_n2', 'n1', 'no cause in time');
link_applied($n3, $n2, 'no cause in time: after concord.causal_wait');
is(rows($n3, 101, 110), '10 n2 upd', 'no cause in time: n3 applied the updates as the newer version');
is( $n3->safe_psql('postgres', q{
		SELECT count(*) || ' ' || string_agg(DISTINCT conflict_type || ' ' || resolution, ',')
		       || ' ' || bool_and(error_message LIKE 'node "n1"''s changes up to % had not arrived after concord.causal_wait%')
		  FROM concord.conflict_history WHERE (key->>'id')::int BETWEEN 101 AND 110}),
	'10 update_missing apply_remote true',
	'no cause in time: n3 records update_missing, apply_remote, saying it did not wait any longer');
link_up($n3, $n1);
wait_replicating(\@nodes, 'no cause in time: link up');
wait_for_apply_all(\@nodes, label => 'no cause in time: link up');
is(rows($_, 101, 110), '10 n2 upd', 'no cause in time: ' . $_->name . " holds n2's updates") foreach @nodes;
# n2's transaction had seen n1's inserts (known.c): they are
# older than the versions n3 applied, not concurrent with them.
is( $n3->safe_psql('postgres', q{
		SELECT count(*) FROM concord.conflict_history
		 WHERE conflict_type = 'insert_exists' AND (key->>'id')::int BETWEEN 101 AND 110}),
	'0', "no cause in time: n1's late inserts are older than the updates on n3, and skipped without a conflict");
checksums_match(\@nodes, [ 'ct', 'ct_fuw' ], 'the end');
$n3->safe_psql('postgres', q{ALTER SYSTEM RESET concord.causal_wait; SELECT pg_reload_conf();});

# --- 6. the slow link stopped for a minute, with the default causal_wait ------------------
# n3's link from n1 stays down until n3 has given up waiting (the default
# concord.causal_wait, 60 s) and applied n2's updates as the newer
# version; then it comes up, and n1's late inserts are older than them.
$marks = history_marks(\@nodes);
link_down($n3, $n1);
$n1->safe_psql('postgres', q{INSERT INTO ct SELECT g, 'n1 ins' FROM generate_series(121, 125) g});
link_applied($n2, $n1, 'a minute down');
$n2->safe_psql('postgres', q{UPDATE ct SET v = 'n2 upd' WHERE id BETWEEN 121 AND 125});
holds($n3, 'sub_n3_n2', 'n1', 'a minute down');
# The wait, plus the backoff of the retries (about 63 s): within the
# default poll timeout (180 s).
ok( $n3->poll_query_until('postgres', q{
		SELECT count(*) = 5 FROM concord.conflict_history
		 WHERE conflict_type = 'update_missing' AND resolution = 'apply_remote'
		   AND (key->>'id')::int BETWEEN 121 AND 125}),
	'a minute down: after concord.causal_wait, n3 applied the updates as the newer version')
  or diag(status_report(\@nodes));
link_up($n3, $n1);
wait_replicating(\@nodes, 'a minute down: link up');
wait_for_apply_all(\@nodes, label => 'a minute down: link up');
is(rows($_, 121, 125), '5 n2 upd', 'a minute down: ' . $_->name . " holds n2's updates") foreach @nodes;
is( $n3->safe_psql('postgres', qq{
		SELECT count(*) FROM concord.conflict_history
		 WHERE conflict_id > $marks->{n3} AND conflict_type <> 'update_missing'}),
	'0', "a minute down: n1's late inserts are skipped as older, with no conflict on n3");
checksums_match(\@nodes, [ 'ct', 'ct_fuw' ], 'after a minute down');

# --- 7. two late UPDATEs that meet a later version, two hops ---------------------------
# ct_fuw (first_update_wins): row 300 everywhere; n4's links from n1 and
# n2 down; n1 updates it, n2 updates it again, n3 again; n4 receives
# n3's update first, then n2's and n1's, both older than it (n3 had
# applied them).  Without known.c, first_update_wins let n1's, the
# earliest, win on n4 only.
$n1->safe_psql('postgres', q{INSERT INTO ct_fuw VALUES (300, 'n1 ins')});
wait_for_apply_all(\@nodes, label => 'two late updates: row written');
$marks = history_marks(\@nodes);
link_down($n4, $n1);
link_down($n4, $n2);
$n1->safe_psql('postgres', q{UPDATE ct_fuw SET v = 'n1 upd' WHERE id = 300});
link_applied($n2, $n1, 'two late updates');
$n2->safe_psql('postgres', q{UPDATE ct_fuw SET v = 'n2 upd' WHERE id = 300});
link_applied($n3, $n1, 'two late updates');
link_applied($n3, $n2, 'two late updates');
$n3->safe_psql('postgres', q{UPDATE ct_fuw SET v = 'n3 upd' WHERE id = 300});
link_applied($n4, $n3, 'two late updates');
is($n4->safe_psql('postgres', 'SELECT v FROM ct_fuw WHERE id = 300'), 'n3 upd',
	"two late updates: n4 has n3's update first");
link_up($n4, $n1);
link_up($n4, $n2);
wait_replicating(\@nodes, 'two late updates: links up');
wait_for_apply_all(\@nodes, label => 'two late updates: links up');
is($_->safe_psql('postgres', 'SELECT v FROM ct_fuw WHERE id = 300'), 'n3 upd',
	'two late updates: ' . $_->name . " holds n3's update") foreach @nodes;
no_conflicts_since(\@nodes, 'two late updates', $marks);

done_testing();
