# More subscriptions than concord's shared memory has entries for (it has
# max_worker_processes of them, all databases together): the ones beyond
# show as down with an error that says so, and nothing else stops (review
# #4: the manager raised the error while holding concord's lock, then
# waited for that lock in its exit callback, and every writing statement
# of the server hung behind it).  Also: more databases than entries, only
# one of them with concord (review #14: the launcher kept an entry for
# every database it had looked at, and concord's database got none).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Five entries; the built-in logical replication launcher, concord's
# launcher and the manager leave background worker slots for two apply
# workers.
my $prov = concord_node('cap_p');
my $sub = concord_node('cap_s', extra_conf => 'max_worker_processes = 5');
run_on_all([ $prov, $sub ], 'CREATE TABLE t (id int PRIMARY KEY);');
add_tables([ $prov, $sub ], ['t']);

my @names = map { subscribe($sub, $prov, name => "s$_", synchronize_data => 0) } 1 .. 6;

# Whatever happens to the subscriptions, the server keeps working.
my ($ret, $out, $err) = $sub->psql('postgres',
	'INSERT INTO t VALUES (1); SELECT count(*) FROM concord.subscription_status',
	timeout => 60);
is($ret, 0, 'with six subscriptions for five entries, a write on the subscriber completes')
  or diag("psql: $ret $err");

ok($sub->poll_query_until('postgres',
		q{SELECT count(*) >= 1 FROM concord.subscription_status
		   WHERE status = 'down' AND last_error LIKE 'too many concord subscriptions%'}),
	'the subscriptions without an entry show as down, with why')
  or diag($sub->safe_psql('postgres',
	'SELECT subscription_name, status, last_error FROM concord.subscription_status'));
like($sub->safe_psql('postgres',
		q{SELECT last_error FROM concord.subscription_status
		   WHERE last_error LIKE 'too many concord subscriptions%' LIMIT 1}),
	qr/room for 5 concord subscriptions.*Increase max_worker_processes/, 'the error says what to do');
ok($sub->poll_query_until('postgres',
		q{SELECT count(*) >= 1 FROM concord.subscription_status
		   WHERE status = 'down' AND last_error LIKE 'could not start the apply worker: every background worker slot is taken%'}),
	'those with an entry but no background worker slot show as down, with why')
  or diag($sub->safe_psql('postgres',
	'SELECT subscription_name, status, last_error FROM concord.subscription_status'));

# Dropping some frees the room: the others get entries and replicate.
$sub->safe_psql('postgres', "SELECT concord.drop_subscription('$_')") foreach qw(s3 s4 s5 s6);
ok($sub->poll_query_until('postgres',
		q{SELECT count(*) = 2 AND bool_and(status = 'replicating') FROM concord.subscription_status}),
	'once subscriptions are dropped, the remaining ones replicate')
  or diag($sub->safe_psql('postgres',
	'SELECT subscription_name, status, last_error FROM concord.subscription_status'));
$prov->safe_psql('postgres', 'INSERT INTO t VALUES (2)');
ok($sub->poll_query_until('postgres', 'SELECT count(*) = 2 FROM t'),
	'and apply what the provider writes');
$sub->stop;

# More databases than entries; concord in the last one created.
my $many = concord_node('cap_db', extension => 0, extra_conf => 'max_worker_processes = 5');
$many->safe_psql('postgres', "CREATE DATABASE d$_") foreach 1 .. 7;
$many->safe_psql('postgres', 'CREATE DATABASE withconcord');
my $dsn = quote_literal($many->connstr('withconcord'));
my $pdsn = quote_literal($prov->connstr('postgres'));
$many->safe_psql('withconcord',
	"CREATE EXTENSION concord;
	 SELECT concord.create_node('cap_db', $dsn);
	 CREATE TABLE t (id int PRIMARY KEY);
	 SELECT concord.create_subscription('from_p', $pdsn, synchronize_data => false);");
ok($many->poll_query_until('withconcord',
		q{SELECT status = 'replicating' FROM concord.subscription_status}),
	'with more databases than entries, the database with concord gets its manager')
  or diag($many->safe_psql('withconcord', 'SELECT status, last_error FROM concord.subscription_status'));
$prov->safe_psql('postgres', 'INSERT INTO t VALUES (3)');
ok($many->poll_query_until('withconcord', 'SELECT count(*) = 1 FROM t WHERE id = 3'),
	'and it replicates');

done_testing();
