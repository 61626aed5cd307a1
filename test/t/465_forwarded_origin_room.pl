# A subscription with forward_origins '{all}' makes a replication origin
# for every node whose changes its provider forwards, and each origin takes
# one of the server's replication origin states (max_replication_slots of
# them, shared with every subscription of every database).  A provider
# forwarding many origins (a big ring, or a hostile peer making them up)
# took them all, and the server's next subscription could not apply
# anything.  Forwarded origins now leave two states free: the subscription
# that wants more stops, saying why, and the others go on.
#
# s has max_replication_slots = 3 (its marker slot takes one slot; origin
# states are counted apart).  s subscribes '{all}' to h, which applies the
# changes of x1 and x2: h's own origin takes the 1st state, x1's would
# leave 2 free and is refused.  Then s subscribes to y: its origin takes
# the 2nd state and y's rows arrive.  With max_replication_slots raised,
# the '{all}' subscription takes x1 and x2 too.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $s = concord_node('s', extra_conf => 'max_replication_slots = 3');
my ($h, $x1, $x2, $y) = map { concord_node($_) } qw(h x1 x2 y);
my @all = ($s, $h, $x1, $x2, $y);
run_on_all(\@all, 'CREATE TABLE t (id int PRIMARY KEY, v text);');
add_tables(\@all, ['t']);
subscribe($h, $x1, synchronize_data => 0);
subscribe($h, $x2, synchronize_data => 0);
my $sub_h = subscribe($s, $h, synchronize_data => 0, forward_origins => ['all']);
wait_replicating([ $h, $s ], 'h receives from x1 and x2, s from h');

$h->safe_psql('postgres', "INSERT INTO t VALUES (0, 'h')");
ok(wait_for_apply_one($s, $sub_h, $h), "h's own row reached s");
$x1->safe_psql('postgres', "INSERT INTO t VALUES (1, 'x1')");
$x2->safe_psql('postgres', "INSERT INTO t VALUES (2, 'x2')");
ok($s->poll_query_until('postgres', qq{
		SELECT status = 'down' AND last_error LIKE 'no room for the replication origin of node "x_", forwarded to subscription "$sub_h"%'
		  FROM concord.subscription_status WHERE subscription_name = '$sub_h'}),
	'the {all} subscription stops at the origin that would leave fewer than 3 states free')
  or diag($s->safe_psql('postgres', 'SELECT subscription_name, status, last_error FROM concord.subscription_status'));
like($s->safe_psql('postgres', "SELECT last_error FROM concord.subscription_status WHERE subscription_name = '$sub_h'"),
	qr/1 of the server's 3 replication origin states .* Hint: Raise max_replication_slots/,
	'the error says how many states are taken and what to do');

my $sub_y = subscribe($s, $y, synchronize_data => 0);
$y->safe_psql('postgres', "INSERT INTO t VALUES (3, 'y')");
ok($s->poll_query_until('postgres', "SELECT count(*) = 1 FROM t WHERE id = 3"),
	"the next subscription of s applies y's row: a state was left for it")
  or diag($s->safe_psql('postgres', 'SELECT subscription_name, status, last_error FROM concord.subscription_status'));

$s->append_conf('postgresql.conf', 'max_replication_slots = 10');
$s->restart;
ok($s->poll_query_until('postgres', "SELECT count(*) = 4 FROM t"),
	"with more states, the {all} subscription brings x1's and x2's rows");
is($s->safe_psql('postgres', 'SELECT string_agg(v, \',\' ORDER BY id) FROM t'), 'h,x1,x2,y',
	's holds every row');

done_testing();
