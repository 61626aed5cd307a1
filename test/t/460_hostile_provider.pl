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
# protocol's lengths stay right).
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

$proxy->stop;
done_testing();
