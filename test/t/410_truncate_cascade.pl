# A remote TRUNCATE ... CASCADE truncates here exactly the tables the
# provider shipped, never more (review #7): the cascade is the provider's,
# already expanded in what it sends.
#
#  1. A table that only the subscriber has, referencing a replicated one by
#     a foreign key, keeps its rows: the TRUNCATE stops the subscription
#     (down, last_error naming the foreign key) instead of emptying it;
#     once the operator removes the reference, the TRUNCATE applies and
#     nothing else is lost.
#  2. Two replicated tables, the referencing one truncated by the
#     provider's cascade: both arrive together and both are emptied.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($a, $b) = concord_nodes(2, prefix => 'tc');
run_on_all([ $a, $b ],
	'CREATE TABLE orders (id int PRIMARY KEY, v text);
	 CREATE TABLE lines (id int PRIMARY KEY, order_id int REFERENCES orders, v text);');
add_tables([ $a, $b ], [ 'orders', 'lines' ]);
subscribe($b, $a);
wait_replicating([$b], 'subscribed');

# 1. local_notes exists on tc2 only, in no set.
$b->safe_psql('postgres',
	'CREATE TABLE local_notes (id int PRIMARY KEY, order_id int REFERENCES orders, note text)');
$a->safe_psql('postgres',
	"INSERT INTO orders SELECT g, 'o' || g FROM generate_series(1, 10) g;");
wait_for_apply_all([$b]);
$b->safe_psql('postgres',
	"INSERT INTO local_notes SELECT g, g, 'kept here' FROM generate_series(1, 5) g");

$a->safe_psql('postgres', 'TRUNCATE orders CASCADE');
ok($b->poll_query_until('postgres',
		"SELECT status = 'down' AND last_error LIKE '%local_notes%'
		   FROM concord.subscription_status"),
	'a remote TRUNCATE CASCADE that would empty a local-only table stops the subscription')
  or diag($b->safe_psql('postgres', 'SELECT status, last_error FROM concord.subscription_status'));
is($b->safe_psql('postgres', 'SELECT count(*) FROM local_notes'), '5',
	'the local-only referencing table keeps its rows');
is($b->safe_psql('postgres', 'SELECT count(*) FROM orders'), '10',
	'nothing of the TRUNCATE was applied');

# The operator decides: here the local notes go, then replication resumes.
$b->safe_psql('postgres', 'ALTER TABLE local_notes DROP CONSTRAINT local_notes_order_id_fkey');
$b->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_tc2_tc1')});
$a->safe_psql('postgres', "INSERT INTO orders VALUES (100, 'after')");
wait_for_apply_all([$b]);
is($b->safe_psql('postgres', 'SELECT string_agg(id::text, \',\') FROM orders'), '100',
	'once the reference is gone, the TRUNCATE and what follows it apply');
is($b->safe_psql('postgres', 'SELECT count(*) FROM local_notes'), '5',
	'the local-only table still has its rows');

# 2. Both tables replicated; the provider's cascade reaches lines.
$a->safe_psql('postgres',
	"INSERT INTO orders SELECT g, 'o' FROM generate_series(1, 3) g;
	 INSERT INTO lines SELECT g, g, 'l' FROM generate_series(1, 3) g;");
wait_for_apply_all([$b]);
is($b->safe_psql('postgres', 'SELECT count(*) FROM lines'), '3', 'lines replicated');
$a->safe_psql('postgres', 'TRUNCATE orders CASCADE');
wait_for_apply_all([$b]);
is($b->safe_psql('postgres', 'SELECT (SELECT count(*) FROM orders) || \'/\' || (SELECT count(*) FROM lines)'),
	'0/0', 'a cascade over replicated tables empties both here too');
is($b->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
	'replicating', 'and the subscription replicates');

done_testing();
