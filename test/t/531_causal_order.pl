# Causality across paths, when the late change finds a row (issue 18): a
# change that arrives after a later version of its row, written by a node
# that had seen it, is older than that version, not concurrent with it,
# whatever the resolver.  Three nodes n1 (priority 10), n2 (priority 5),
# n3 (priority 1) in a mesh; table fuw under first_update_wins, table prio
# under replica_priority.  A link is "down" while the subscription that is
# that link is disabled.  In each scenario n3's link from n1 is down while
# n1 writes and n2, having applied n1's change, writes over it; n3 gets
# n2's change first, then n1's once the link is up.
#
#  A. UPDATE before UPDATE (fuw): n1 updates row 1, n2 updates it again.
#     Pass: every node ends with n2's value and no node records a conflict
#     (without the fix, first_update_wins let n1's earlier update win on
#     n3 only).
#  B. A local write on n3 in between, under last_update_wins (table lww):
#     after n2's update has come, n3 updates row 2 itself.  n3's SEEN
#     vector does not say that it had seen n1's update through n2's, so
#     the late update meets n3's version as a concurrent one, and the later
#     version wins.  Pass: every node ends with n3's value (under
#     first_update_wins the nodes would differ: docs/limits.md).
#  C. DELETE after UPDATE (fuw): n1 updates row 3, n2 deletes it.  Pass:
#     row 3 is gone everywhere, no conflict.
#  D. DELETE after INSERT (fuw): n1 inserts row 4, n2 deletes it.  Pass:
#     row 4 is gone everywhere (n3 met the DELETE first: delete_missing).
#  E. UPDATE before UPDATE under replica_priority: n1 (the higher
#     priority) updates row 5, n2 updates it again.  Pass: every node ends
#     with n2's value, no conflict.
#  G. INSERT after a DELETE of another node (fuw): n1 deletes row 7, n2
#     inserts it again.  n3 receives n2's INSERT while it still holds the
#     row n1 deleted: the INSERT's writer had seen that version, so it is
#     applied over it, with no conflict; n1's DELETE, when it comes, is
#     older than the INSERT.  Pass: every node holds n2's row, no conflict
#     (without it, first_update_wins kept n1's old row on n3 and the late
#     DELETE then removed it there only).
#  F. Across a restart of n3 (its notes saved at shutdown and loaded): as
#     A on row 6, with n3 restarted before the link comes up.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $n1 = concord_node('n1', priority => 10);
my $n2 = concord_node('n2', priority => 5);
my $n3 = concord_node('n3', priority => 1);
my @nodes = ($n1, $n2, $n3);
setup_mesh(\@nodes,
	q{CREATE TABLE fuw (id int PRIMARY KEY, v text NOT NULL);
	  CREATE TABLE prio (id int PRIMARY KEY, v text NOT NULL);
	  CREATE TABLE lww (id int PRIMARY KEY, v text NOT NULL);
	  SELECT concord.set_conflict_resolver('fuw', 'first_update_wins');
	  SELECT concord.set_conflict_resolver('prio', 'replica_priority');},
	[ 'fuw', 'prio', 'lww' ]);

$n1->safe_psql('postgres', q{
	INSERT INTO fuw SELECT g, 'n1 ins' FROM generate_series(1, 7) g WHERE g <> 4;
	INSERT INTO prio VALUES (5, 'n1 ins');
	INSERT INTO lww VALUES (2, 'n1 ins')});
wait_for_apply_all(\@nodes, label => 'rows everywhere');

sub value_everywhere
{
	my ($label, $table, $id, $want) = @_;
	foreach my $n (@nodes)
	{
		is($n->safe_psql('postgres', "SELECT coalesce(max(v), '(none)') FROM $table WHERE id = $id"),
			$want, "$label: " . $n->name . " holds $want");
	}
	return;
}

# n3's link from n1 is down while $n1_sql and then, once n2 has applied
# it, $n2_sql run; $between runs once n3 has n2's change; then the link
# comes up and everything is applied everywhere.
sub overtaken
{
	my (%a) = @_;
	link_down($n3, $n1);
	$n1->safe_psql('postgres', $a{n1_sql});
	link_applied($n2, $n1, $a{label});
	$n2->safe_psql('postgres', $a{n2_sql});
	link_applied($n3, $n2, $a{label});
	$a{between}->() if $a{between};
	link_up($n3, $n1);
	wait_for_apply_all(\@nodes, label => $a{label});
	return;
}

# --- A. UPDATE before UPDATE, first_update_wins ---------------------------------
my $marks = history_marks(\@nodes);
overtaken(
	label  => 'A',
	n1_sql => q{UPDATE fuw SET v = 'n1 upd' WHERE id = 1},
	n2_sql => q{UPDATE fuw SET v = 'n2 upd' WHERE id = 1});
value_everywhere('A', 'fuw', 1, 'n2 upd');
no_conflicts_since(\@nodes, 'A', $marks);

# --- B. a local write on n3 after the overtaking update ---------------------------
overtaken(
	label   => 'B',
	n1_sql  => q{UPDATE lww SET v = 'n1 upd' WHERE id = 2},
	n2_sql  => q{UPDATE lww SET v = 'n2 upd' WHERE id = 2},
	between => sub {
		$n3->safe_psql('postgres', q{UPDATE lww SET v = 'n3 upd' WHERE id = 2});
	});
value_everywhere('B', 'lww', 2, 'n3 upd');

# --- C. DELETE after UPDATE ------------------------------------------------------------
$marks = history_marks(\@nodes);
overtaken(
	label  => 'C',
	n1_sql => q{UPDATE fuw SET v = 'n1 upd' WHERE id = 3},
	n2_sql => q{DELETE FROM fuw WHERE id = 3});
value_everywhere('C', 'fuw', 3, '(none)');
no_conflicts_since(\@nodes, 'C', $marks);

# --- D. DELETE after INSERT --------------------------------------------------------------
overtaken(
	label  => 'D',
	n1_sql => q{INSERT INTO fuw VALUES (4, 'n1 ins')},
	n2_sql => q{DELETE FROM fuw WHERE id = 4});
value_everywhere('D', 'fuw', 4, '(none)');

# --- E. UPDATE before UPDATE, replica_priority ------------------------------------------
$marks = history_marks(\@nodes);
overtaken(
	label  => 'E',
	n1_sql => q{UPDATE prio SET v = 'n1 upd' WHERE id = 5},
	n2_sql => q{UPDATE prio SET v = 'n2 upd' WHERE id = 5});
value_everywhere('E', 'prio', 5, 'n2 upd');
no_conflicts_since(\@nodes, 'E', $marks);

# --- G. INSERT after a DELETE of another node -------------------------------------------
$marks = history_marks(\@nodes);
overtaken(
	label  => 'G',
	n1_sql => q{DELETE FROM fuw WHERE id = 7},
	n2_sql => q{INSERT INTO fuw VALUES (7, 'n2 ins')});
value_everywhere('G', 'fuw', 7, 'n2 ins');
no_conflicts_since(\@nodes, 'G', $marks);

# --- F. across a restart of n3 ---------------------------------------------------------------
$marks = history_marks(\@nodes);
overtaken(
	label   => 'F',
	n1_sql  => q{UPDATE fuw SET v = 'n1 upd' WHERE id = 6},
	n2_sql  => q{UPDATE fuw SET v = 'n2 upd' WHERE id = 6},
	between => sub { $n3->restart; });
value_everywhere('F', 'fuw', 6, 'n2 upd');
no_conflicts_since(\@nodes, 'F', $marks);

done_testing();
