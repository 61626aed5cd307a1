# A provider that lies about the tables it sends changes of (review #11):
# its changes and its copy name pg_catalog.pg_authid and a table of
# concord's own schema.  The subscriber writes as superuser, so before
# the fix a provider could add a superuser role to every subscriber, or
# rewrite its conflict resolvers.  Now the subscriber refuses, stays down
# and says why, and writes nothing there.
#
# The lying provider is a real node behind a proxy of the test's own that
# rewrites the schema names in what it sends ('xx_catalog' becomes
# 'pg_catalog', 'concorx' becomes 'concord': the same lengths, so the
# protocol's lengths stay right).  Last, the proxy renames the provider
# in what it sends: transactions of an origin the subscription does not
# receive are refused.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordProxy;
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = concord_node('hostile');
my $s = concord_node('victim');

$p->safe_psql('postgres', q{
	CREATE SCHEMA xx_catalog;
	CREATE TABLE xx_catalog.pg_authid (
	    oid oid PRIMARY KEY, rolname name, rolsuper bool, rolinherit bool,
	    rolcreaterole bool, rolcreatedb bool, rolcanlogin bool,
	    rolreplication bool, rolbypassrls bool, rolconnlimit int);
	INSERT INTO xx_catalog.pg_authid
	    VALUES (99001, 'intruder', true, true, true, true, true, true, true, -1);
	SELECT concord.replication_set_add_table('default', 'xx_catalog.pg_authid');
	CREATE SCHEMA concorx;
	CREATE TABLE concorx.conflict_resolver (
	    set_reloid oid, conflict_type text, resolver text, handler regprocedure,
	    PRIMARY KEY (set_reloid, conflict_type));
	SELECT concord.create_replication_set('streamed');
	SELECT concord.replication_set_add_table('streamed', 'concorx.conflict_resolver');
});

my $proxy = ConcordProxy->new($p,
	rewrite => [ [ 'xx_catalog', 'pg_catalog' ], [ 'concorx', 'concord' ] ]);

# 1. The copy names pg_catalog.pg_authid.
subscribe($s, $p, name => 'copy_sub', dsn => $proxy->connstr('postgres'));
ok($s->poll_query_until('postgres',
		q{SELECT status = 'down' AND last_error LIKE '%pg_catalog.pg_authid, which replication never writes%'
		    FROM concord.subscription_status WHERE subscription_name = 'copy_sub'}),
	'a copy of pg_catalog.pg_authid is refused, and the subscription says why')
  or diag($s->safe_psql('postgres', 'SELECT subscription_name, status, last_error FROM concord.subscription_status'));
is($s->safe_psql('postgres', q{SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'}),
	'0', 'no role was added by the copy');
unsubscribe($s, 'copy_sub');

# 2. The stream names concord.conflict_resolver.
subscribe($s, $p, name => 'stream_sub', dsn => $proxy->connstr('postgres'),
	sets => ['streamed'], synchronize_data => 0);
wait_replicating([$s], 'the stream subscription starts');
$p->safe_psql('postgres',
	q{INSERT INTO concorx.conflict_resolver VALUES (0, '', 'apply_remote', NULL)});
ok($s->poll_query_until('postgres',
		q{SELECT status = 'down' AND last_error LIKE '%concord.conflict_resolver, which replication never writes%'
		    FROM concord.subscription_status WHERE subscription_name = 'stream_sub'}),
	'a change of concord.conflict_resolver is refused, and the subscription says why')
  or diag($s->safe_psql('postgres', 'SELECT subscription_name, status, last_error FROM concord.subscription_status'));
is($s->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_resolver'),
	'0', "concord's catalog was not written");

# 3. Through the stream too, pg_authid.
unsubscribe($s, 'stream_sub');
subscribe($s, $p, name => 'auth_sub', dsn => $proxy->connstr('postgres'), synchronize_data => 0);
wait_replicating([$s], 'the third subscription starts');
$p->safe_psql('postgres',
	q{INSERT INTO xx_catalog.pg_authid VALUES (99002, 'intruder2', true, true, true, true, true, true, true, -1)});
ok($s->poll_query_until('postgres',
		q{SELECT status = 'down' AND last_error LIKE '%pg_catalog.pg_authid, which replication never writes%'
		    FROM concord.subscription_status WHERE subscription_name = 'auth_sub'}),
	'a streamed change of pg_catalog.pg_authid is refused')
  or diag($s->safe_psql('postgres', 'SELECT subscription_name, status, last_error FROM concord.subscription_status'));
is($s->safe_psql('postgres', q{SELECT count(*) FROM pg_roles WHERE rolname LIKE 'intruder%'}),
	'0', 'no role was added by the stream');

unsubscribe($s, 'auth_sub');
$proxy->stop;

# 4. Transactions of an origin the subscription does not receive: the
#    proxy renames the provider ('hostile' becomes 'intrude') in what it
#    sends.  Each origin received becomes a replication origin here, and
#    those are few (every database of the server shares them): a provider
#    sending made-up origins could use them all up.  The subscription
#    (forward_origins '{}') refuses, no origin is made, and no node is
#    recorded in concord.node (as a node heard of through others would be).
run_on_all([ $p, $s ], 'CREATE TABLE plain (id int PRIMARY KEY, v text);');
$p->safe_psql('postgres', q{
	SELECT concord.create_replication_set('plainset');
	SELECT concord.replication_set_add_table('plainset', 'plain');
});
# The subscription is made through an honest proxy, which then gives way
# to the renaming one on the same port.
my $honest = ConcordProxy->new($p);
subscribe($s, $p, name => 'origin_sub', dsn => $honest->connstr('postgres'),
	sets => ['plainset'], synchronize_data => 0);
wait_replicating([$s], 'the fourth subscription starts');
my $port = $honest->port;
$honest->stop;
my $renamer = ConcordProxy->new($p, port => $port, rewrite => [ [ 'hostile', 'intrude' ] ]);
$p->safe_psql('postgres', q{INSERT INTO plain VALUES (1, 'one')});
ok($s->poll_query_until('postgres',
		q{SELECT status = 'down'
		     AND last_error LIKE '%the provider sent a transaction of origin "intrude", which subscription "origin_sub" does not receive%'
		    FROM concord.subscription_status WHERE subscription_name = 'origin_sub'}),
	'a transaction of an origin the subscription does not receive is refused')
  or diag($s->safe_psql('postgres', 'SELECT subscription_name, status, last_error FROM concord.subscription_status'));
is($s->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_origin WHERE roname LIKE '%intrude'}),
	'0', 'no replication origin was made for it');
is($s->safe_psql('postgres', 'SELECT count(*) FROM plain'), '0', 'and nothing was applied');
is($s->safe_psql('postgres', q{SELECT count(*) FROM concord.node WHERE node_name = 'intrude'}),
	'0', 'and no node "intrude" was recorded in concord.node');
$renamer->stop;

done_testing();
