# concord.table_diff() (issue 13), cases beside TAP 710's load:
#  1. Rows of a node left out of peers are in flight, not compared: n1's
#     updates reach n2 but not n3 (n3's subscription to n1 disabled); a
#     diff of n2 with n3 alone reports none of those keys (before, they
#     passed for settled, as older than every fence, and were reported).
#  2. This node's table is read as the role that called table_diff, not
#     as the worker's superuser: a column whose type has a cast to json
#     runs its function during the digest, which records current_user.
#  3. A role granted table_diff and the digest functions, but no right on
#     concord's catalogs (node_name of concord.node only), starts and
#     waits for a run (the run is recorded as the catalogs' owner).
#  4. This node's steps run as a security-restricted operation: a cast
#     that creates a temporary table fails the run.
#  5. One-way replication: de4 subscribes to de1, which does not subscribe
#     to de4. A diff on de4 with de1 ends (de1 waits only for the fences
#     of the nodes whose changes it receives; it used to wait for de4's
#     until the run's timeout) and reports de4's own row as extra; the
#     same diff run from de1 reports it as missing.
#  6. concord.check_interval: the manager of de2 diffs its replicated
#     tables by itself, each in turn; a difference made by hand on de3 is
#     found by a later scheduled run.
#  7. The pace of a diff: a peer reads the table in steps, one statement
#     each (concord.table_digest_step, counted by track_functions on
#     de3): one step per read at full speed, one per few rows with
#     concord.diff_cost_limit set by the session that starts the diff,
#     and at concord.check_cost_limit for scheduled diffs; paced or not,
#     the same difference is found.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(3, prefix => 'de');
my ($n1, $n2, $n3) = @nodes;
setup_mesh(\@nodes, q{
	CREATE TYPE mood AS ENUM ('calm', 'busy');
	CREATE TABLE who (role name, at timestamptz DEFAULT clock_timestamp());
	GRANT INSERT ON who TO PUBLIC;
	CREATE FUNCTION mood_json(mood) RETURNS json LANGUAGE sql AS
		$$ INSERT INTO public.who (role) VALUES (current_user); SELECT pg_catalog.to_json($1::text) $$;
	CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
	CREATE TABLE t (id int PRIMARY KEY, v text, m mood DEFAULT 'calm');
	CREATE TYPE tone AS ENUM ('low', 'high');
	CREATE FUNCTION tone_json(tone) RETURNS json LANGUAGE sql AS
		$$ CREATE TEMPORARY TABLE IF NOT EXISTS left_behind (x int); SELECT pg_catalog.to_json($1::text) $$;
	CREATE CAST (tone AS json) WITH FUNCTION tone_json(tone);
	CREATE TABLE t2 (id int PRIMARY KEY, k tone DEFAULT 'low');},
	['t', 't2']);
$n1->safe_psql('postgres', q{INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 200) g});
wait_for_apply_all(\@nodes, label => 'rows everywhere');

sub diff_on
{
	my ($node, $args, $role, $settings) = @_;
	my $set = ($role ? "SET ROLE $role;" : '') . ($settings // '');
	my $id = $node->safe_psql('postgres', "$set SELECT concord.table_diff($args)");
	my $status = $node->safe_psql('postgres', "$set SELECT concord.wait_for_diff($id, '5min')");
	return ($id, $status);
}

# 1. n1's changes reach n2 only.
$n3->safe_psql('postgres', q{SELECT concord.alter_subscription_disable('sub_de3_de1')});
$n1->safe_psql('postgres', q{UPDATE t SET v = 'changed on de1' WHERE id <= 20});
ok(wait_for_apply_one($n2, 'sub_de2_de1', $n1), "de2 holds de1's updates");
my ($id, $status) = diff_on($n2, q{'t', '{de3}'});
is($status, 'clean', 'a diff of de2 with de3 alone is clean: de1\'s rows are in flight')
  or diag($n2->safe_psql('postgres', "SELECT error FROM concord.diff_run WHERE run_id = $id"));
is($n2->safe_psql('postgres', "SELECT in_flight >= 20 FROM concord.diff_run WHERE run_id = $id"), 't',
	'and counts them in flight');
$n3->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_de3_de1')});
wait_replicating(\@nodes, 'de3 receives from de1 again');
wait_for_apply_all(\@nodes, label => 'the updates everywhere');
($id, $status) = diff_on($n2, q{'t', '{de3}'});
is($status, 'clean', 'once de3 has them, the diff is clean too');

# 2 and 3. A role granted what a diff needs, and nothing on concord's catalogs.
$n1->safe_psql('postgres', q{
	CREATE ROLE differ;
	GRANT USAGE ON SCHEMA concord TO differ;
	GRANT SELECT ON t, concord.tombstone, concord.departed_node TO differ;
	GRANT SELECT (node_name) ON concord.node TO differ;
	GRANT EXECUTE ON FUNCTION concord.table_diff(regclass, name[], interval),
		concord.wait_for_diff(bigint, interval), concord.fence(interval),
		concord.wait_for_token(text, interval),
		concord.table_digest(regclass, jsonb, integer),
		concord.table_digest_rows(regclass, jsonb, integer, integer[]),
		concord.table_digest_keys(regclass, jsonb, jsonb),
		concord.table_digest_step(regclass, jsonb, integer, integer[], bigint, bigint),
		concord.table_digest_step_buckets(), concord.table_digest_step_rows(),
		concord.key_columns(regclass), concord.row_version(xid) TO differ;
	TRUNCATE who;});
($id, $status) = diff_on($n1, q{'t'}, 'differ');
is($status, 'clean', 'a role granted the functions runs a diff and waits for it')
  or diag($n1->safe_psql('postgres', "SELECT error FROM concord.diff_run WHERE run_id = $id"));
is($n1->safe_psql('postgres', 'SELECT string_agg(DISTINCT role, \',\') FROM who'), 'differ',
	'this node\'s table was read as that role (the cast to json ran as differ)');
is($n1->safe_psql('postgres', "SELECT started_by::regrole FROM concord.diff_run WHERE run_id = $id"), 'differ',
	'the run records who started it');

# 4. As a security-restricted operation: the caller's code run by the
# digest can leave nothing behind in the worker (a temporary object that
# the worker's own statements would then find).
$n1->safe_psql('postgres', q{INSERT INTO t2 VALUES (1)});
wait_for_apply_all(\@nodes, label => 't2 everywhere');
$n1->safe_psql('postgres', q{GRANT SELECT ON t2 TO differ});
($id, $status) = diff_on($n1, q{'t2'}, 'differ');
is($status, 'failed', 'a digest whose cast creates a temporary table fails');
like($n1->safe_psql('postgres', "SELECT error FROM concord.diff_run WHERE run_id = $id"),
	qr/cannot create temporary table within security-restricted operation/, 'as a security-restricted operation');

# 5. One-way replication.
my $n4 = concord_node('de4');
$n4->safe_psql('postgres', q{CREATE TYPE mood AS ENUM ('calm', 'busy');
	CREATE TABLE t (id int PRIMARY KEY, v text, m mood DEFAULT 'calm');
	CREATE TYPE tone AS ENUM ('low', 'high');
	CREATE TABLE t2 (id int PRIMARY KEY, k tone DEFAULT 'low');
	SELECT concord.replication_set_add_table('default', 't');
	SELECT concord.replication_set_add_table('default', 't2');});
my $sub4 = subscribe($n4, $n1, synchronize_data => 1);
$n4->safe_psql('postgres', "SELECT concord.wait_for_subscription_sync_complete('$sub4')",
	timeout => $ConcordTest::TIMEOUT);
$n4->safe_psql('postgres', q{INSERT INTO t VALUES (9001, 'only on de4')});
($id, $status) = diff_on($n4, q{'t', '{de1}', '1min'});
is($status, 'divergent', 'a diff over one-way replication ends')
  or diag($n4->safe_psql('postgres', "SELECT error FROM concord.diff_run WHERE run_id = $id"));
is($n4->safe_psql('postgres', "SELECT key->>'id', kind FROM concord.diff_row WHERE run_id = $id"),
	'9001|extra', "and reports de4's own row as extra");
is($n4->safe_psql('postgres', "SELECT receives_from FROM concord.fence()"), '{de1}',
	'de4 receives the changes of de1 only');

# 6. Scheduled checks.
$n2->safe_psql('postgres', q{ALTER SYSTEM SET concord.check_interval = '1s'; SELECT pg_reload_conf()});
ok($n2->poll_query_until('postgres', q{SELECT count(DISTINCT relid) = 2 FROM concord.diff_run
	WHERE started_by = (SELECT oid FROM pg_roles WHERE rolsuper ORDER BY oid LIMIT 1)}),
	"de2's manager diffs each of its tables by itself");
$n3->safe_psql('postgres', join(";\n",
	"SELECT pg_replication_origin_create('by_hand')",
	"SELECT pg_replication_origin_session_setup('by_hand')",
	"UPDATE t SET v = 'changed by hand on de3' WHERE id = 150",
	"SELECT pg_replication_origin_session_reset()"));
ok($n2->poll_query_until('postgres', q{SELECT EXISTS (SELECT FROM concord.diff_row r JOIN concord.diff_run d USING (run_id)
	WHERE d.relid = 't'::regclass AND r.key = '{"id": 150}')}),
	'a later scheduled run finds the difference made on de3');
is($n2->safe_psql('postgres', q{SELECT count(*) <= 1 FROM concord.diff_run WHERE relid = 't'::regclass AND status = 'clean'}),
	't', 'of the clean runs of t, only the latest is kept');
$n2->safe_psql('postgres', q{ALTER SYSTEM RESET concord.check_interval; SELECT pg_reload_conf()});

# 7. The pace of a diff, as the steps of de3's reads show.
$n1->safe_psql('postgres', q{INSERT INTO t SELECT g, 'more ' || g FROM generate_series(1001, 4000) g});
wait_for_apply_all(\@nodes, label => 'more rows everywhere');
$n3->safe_psql('postgres', q{ALTER SYSTEM SET track_functions = 'all'; SELECT pg_reload_conf()});
my $steps_sql = q{SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
	WHERE schemaname = 'concord' AND funcname = 'table_digest_step'};
my $blocks = $n3->safe_psql('postgres', q{SELECT pg_relation_size('t') / current_setting('block_size')::int});
cmp_ok($blocks, '>=', 10, "t fills $blocks blocks on de3");

# Steps of de3 for a diff run from de1 with the settings given; the
# connection of the run is closed at its end, which reports its counts.
sub steps_of_diff
{
	my ($settings) = @_;
	my $before = $n3->safe_psql('postgres', $steps_sql);
	my ($id, $status) = diff_on($n1, q{'t', '{de3}'}, undef, $settings);
	$n3->poll_query_until('postgres', "SELECT ($steps_sql) > $before")
	  or diag('no step counted on de3');
	# the count of one backend is reported at once, at its exit
	return ($id, $status, $n3->safe_psql('postgres', $steps_sql) - $before);
}
my ($fast_id, $fast_status, $fast_steps) = steps_of_diff('');
is($fast_status, 'divergent', 'a diff at full speed finds the difference made by hand on de3')
  or diag($n1->safe_psql('postgres', "SELECT error FROM concord.diff_run WHERE run_id = $fast_id"));
cmp_ok($fast_steps, '<=', 2, "at full speed de3 reads the table in one step per read ($fast_steps)");
my ($slow_id, $slow_status, $slow_steps) =
  steps_of_diff('SET concord.diff_cost_delay = 1; SET concord.diff_cost_limit = 1;');
is($slow_status, 'divergent', 'a paced diff ends too');
cmp_ok($slow_steps, '>=', $blocks, "paced at one row per step, de3 reads a block or so per step ($slow_steps steps)");
is($n1->safe_psql('postgres', "SELECT string_agg(key::text || kind, ',' ORDER BY key::text) FROM concord.diff_row WHERE run_id = $slow_id"),
	$n1->safe_psql('postgres', "SELECT string_agg(key::text || kind, ',' ORDER BY key::text) FROM concord.diff_row WHERE run_id = $fast_id"),
	'and reports the same differences');
is($n1->safe_psql('postgres', "SELECT rows_settled FROM concord.diff_run WHERE run_id = $slow_id"),
	$n1->safe_psql('postgres', "SELECT rows_settled FROM concord.diff_run WHERE run_id = $fast_id"),
	'with the same count of settled rows');

# Scheduled diffs go at concord.check_cost_limit.
my $before = $n3->safe_psql('postgres', $steps_sql);
my $last = $n2->safe_psql('postgres', q{SELECT coalesce(max(run_id), 0) FROM concord.diff_run});
$n2->safe_psql('postgres', q{ALTER SYSTEM SET concord.check_cost_limit = 1;
	ALTER SYSTEM SET concord.check_cost_delay = 1;
	ALTER SYSTEM SET concord.check_interval = '1s'; SELECT pg_reload_conf()});
ok($n2->poll_query_until('postgres', qq{SELECT EXISTS (SELECT FROM concord.diff_run
	WHERE run_id > $last AND relid = 't'::regclass AND status <> 'running')}),
	"de2's manager runs a scheduled diff of t");
$n2->safe_psql('postgres', q{ALTER SYSTEM RESET concord.check_interval;
	ALTER SYSTEM RESET concord.check_cost_limit; ALTER SYSTEM RESET concord.check_cost_delay;
	SELECT pg_reload_conf()});
ok($n3->poll_query_until('postgres', "SELECT ($steps_sql) - $before >= $blocks"),
	'de3 read t a block or so per step for it');

done_testing();
