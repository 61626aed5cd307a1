# Collisions through unique indexes other than the key, in a 3-node mesh
# under last_update_wins: insert_exists through another unique index,
# update_exists, and multiple_unique_conflicts; and (review #12) an UPDATE
# that moves its row onto a key another node inserted meanwhile: it was a
# unique violation that stopped the subscription for good, it is
# update_exists.
#
# Table uq (id PRIMARY KEY, u UNIQUE), table uq2 (id PRIMARY KEY, a UNIQUE,
# b UNIQUE).  Each case: partition every node, write concurrently, heal
# (sometimes one subscription first, to force an order), then:
#   - every node holds the same rows, and the rows the rule dictates: the
#     later version wins, the losing row disappears everywhere;
#   - the expected conflict rows are in the history of the nodes that met
#     them, and no subscription is down (nothing stopped on a violation).
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

setup_mesh(\@nodes,
	"CREATE TABLE uq (id int PRIMARY KEY, u text UNIQUE, v text);\n"
	  . "CREATE TABLE uq2 (id int PRIMARY KEY, a int UNIQUE, b int UNIQUE, v text);\n",
	[ 'uq', 'uq2' ]);

sub rows_everywhere
{
	my ($sql, $expected, $label) = @_;
	foreach my $n (@nodes)
	{
		is($n->safe_psql('postgres', $sql), $expected, "$label: rows on " . $n->name);
	}
	return;
}

sub history
{
	my ($n, $table) = @_;
	return $n->safe_psql('postgres',
		"SELECT conflict_type || ' ' || resolution || ' ' || key::text"
		  . " FROM concord.conflict_history WHERE relation = 'public.$table'"
		  . " ORDER BY conflict_id");
}

sub all_replicating
{
	my ($label) = @_;
	foreach my $n (@nodes)
	{
		is($n->safe_psql('postgres',
				q{SELECT string_agg(DISTINCT status, ',') FROM concord.subscription_status}),
			'replicating', "$label: every subscription of " . $n->name . ' replicating');
	}
	return;
}

# --- insert_exists through another unique index ------------------------------
partition_nodes(\@nodes, 'case 1');
$n1->safe_psql('postgres', "INSERT INTO uq VALUES (1, 'x', 'n1, earlier')");
$n2->safe_psql('postgres', "INSERT INTO uq VALUES (2, 'x', 'n2, later')");
heal_nodes(\@nodes, 'case 1 healed');
rows_everywhere(q{SELECT string_agg(id || ':' || u || ':' || v, ',' ORDER BY id) FROM uq},
	'2:x:n2, later', 'insert_exists through u: the later row wins');
is(history($n1, 'uq'), 'insert_exists apply_remote {"id": 2}',
	'n1 met insert_exists and applied the later row');
is(history($n2, 'uq'), 'insert_exists keep_local {"id": 1}',
	'n2 met insert_exists and kept its later row');
like(history($n3, 'uq'), qr/^insert_exists (apply_remote \{"id": 2\}|keep_local \{"id": 1\})$/,
	'n3 met insert_exists once, whichever row came first');
all_replicating('case 1');

# --- update_exists -----------------------------------------------------------
$n1->safe_psql('postgres', "INSERT INTO uq VALUES (3, 'a', 'three'), (4, 'b', 'four')");
wait_for_apply_all(\@nodes, label => 'case 2 rows');
$_->safe_psql('postgres', 'DELETE FROM concord.conflict_history') foreach @nodes;
partition_nodes(\@nodes, 'case 2');
$n1->safe_psql('postgres', "UPDATE uq SET u = 'c', v = 'n1, earlier' WHERE id = 3");
$n2->safe_psql('postgres', "UPDATE uq SET u = 'c', v = 'n2, later' WHERE id = 4");
heal_nodes(\@nodes, 'case 2 healed');
rows_everywhere(q{SELECT string_agg(id || ':' || u || ':' || v, ',' ORDER BY id) FROM uq WHERE id IN (3, 4)},
	'4:c:n2, later', 'update_exists: the later update wins, the loser row is gone');
is(history($n1, 'uq'), 'update_exists apply_remote {"id": 4}',
	'n1 met update_exists and applied the later update');
is(history($n2, 'uq'), 'update_exists keep_local {"id": 3}',
	'n2 met update_exists, kept its row and dropped the loser');
like(history($n3, 'uq'), qr/^update_exists (apply_remote \{"id": 4\}|keep_local \{"id": 3\})$/,
	'n3 met update_exists once');
all_replicating('case 2');

# Both orders on n3: again, with n3 receiving n2's update first this time
# if it got n1's first before (and the other way round).
my $n3_first = history($n3, 'uq') =~ /apply_remote/ ? 'n1' : 'n2';
note("case 2: n3 applied ${n3_first}'s update first");
$n1->safe_psql('postgres', "INSERT INTO uq VALUES (5, 'd', 'five'), (6, 'e', 'six')");
wait_for_apply_all(\@nodes, label => 'case 3 rows');
$_->safe_psql('postgres', 'DELETE FROM concord.conflict_history') foreach @nodes;
partition_nodes(\@nodes, 'case 3');
$n1->safe_psql('postgres', "UPDATE uq SET u = 'f', v = 'n1, earlier' WHERE id = 5");
$n2->safe_psql('postgres', "UPDATE uq SET u = 'f', v = 'n2, later' WHERE id = 6");
my $first = $n3_first eq 'n1' ? 'n2' : 'n1';
$n3->safe_psql('postgres', "SELECT concord.alter_subscription_enable('sub_n3_$first')");
ok(wait_for_apply_one($n3, "sub_n3_$first", $first eq 'n1' ? $n1 : $n2),
	"case 3: n3 applied $first first");
heal_nodes(\@nodes, 'case 3 healed');
rows_everywhere(q{SELECT string_agg(id || ':' || u || ':' || v, ',' ORDER BY id) FROM uq WHERE id IN (5, 6)},
	'6:f:n2, later', 'update_exists, other order on n3: same outcome');
is(history($n3, 'uq'),
	$first eq 'n1' ? 'update_exists apply_remote {"id": 6}' : 'update_exists keep_local {"id": 5}',
	"case 3: n3's conflict as the order dictates");
checksums_match(\@nodes, ['uq'], 'cases 1-3');

# --- multiple_unique_conflicts -------------------------------------------------
$_->safe_psql('postgres', 'DELETE FROM concord.conflict_history') foreach @nodes;
partition_nodes(\@nodes, 'case 4');
$n1->safe_psql('postgres', "INSERT INTO uq2 VALUES (10, 1, 1, 'n1, first')");
$n3->safe_psql('postgres', "INSERT INTO uq2 VALUES (11, 2, 2, 'n3, second')");
$n2->safe_psql('postgres', "INSERT INTO uq2 VALUES (12, 1, 2, 'n2, last')");
# n1 gets n3's row before n2's: n2's then collides with two rows.
$n1->safe_psql('postgres', "SELECT concord.alter_subscription_enable('sub_n1_n3')");
ok(wait_for_apply_one($n1, 'sub_n1_n3', $n3), 'case 4: n1 applied n3 first');
is($n1->safe_psql('postgres', 'SELECT count(*) FROM uq2'), '2', 'case 4: n1 holds two rows');
heal_nodes(\@nodes, 'case 4 healed');
rows_everywhere(q{SELECT string_agg(id || ':' || a || ':' || b || ':' || v, ',' ORDER BY id) FROM uq2},
	'12:1:2:n2, last', 'multiple_unique_conflicts: the latest row wins over both');
like(history($n1, 'uq2'), qr/^multiple_unique_conflicts apply_remote \{"id": 12\}$/m,
	'n1 met multiple_unique_conflicts and applied the latest row');
is($n2->safe_psql('postgres',
		q{SELECT string_agg(conflict_type || ' ' || resolution || ' ' || key::text, ',' ORDER BY key::text)
		    FROM concord.conflict_history WHERE relation = 'public.uq2'}),
	'insert_exists keep_local {"id": 10},insert_exists keep_local {"id": 11}',
	'n2 kept its latest row against both');
checksums_match(\@nodes, ['uq2'], 'case 4');
all_replicating('case 4');

# --- an UPDATE that changes the key onto a concurrently inserted key ---------
$n1->safe_psql('postgres', "INSERT INTO uq VALUES (7, 'g', 'seven')");
wait_for_apply_all(\@nodes, label => 'case 5 rows');
$_->safe_psql('postgres', 'DELETE FROM concord.conflict_history') foreach @nodes;
partition_nodes(\@nodes, 'case 5');
$n1->safe_psql('postgres', "UPDATE uq SET id = 8, v = 'n1, earlier' WHERE id = 7");
$n2->safe_psql('postgres', "INSERT INTO uq VALUES (8, 'h', 'n2, later')");
heal_nodes(\@nodes, 'case 5 healed');
rows_everywhere(q{SELECT string_agg(id || ':' || u || ':' || v, ',' ORDER BY id) FROM uq WHERE id IN (7, 8)},
	'8:h:n2, later', 'key-changing update_exists: the later insert wins, the moved row is gone');
like(history($n2, 'uq'), qr/^update_exists keep_local /,
	'n2 met update_exists on the key and kept its later row');
is(history($n1, 'uq'), 'insert_exists apply_remote {"id": 8}',
	'n1 met the insert on its moved row and applied it');
all_replicating('case 5');
checksums_match(\@nodes, ['uq'], 'case 5');

done_testing();
