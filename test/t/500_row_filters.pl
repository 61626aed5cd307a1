# Row filters run on the provider, as its replication role (review #2,
# #17).  Before, the filter's text was stored as given, parsed again in the
# WAL sender (unlocked, under its search_path) and pasted into the initial
# copy's COPY, sent in the simple query protocol:
#
#  1. a table owner allowed to add tables set a filter that, read with
#     standard_conforming_strings off (as the owner's session had it) was
#     one string literal, and read by the copy's session (on) ended the
#     COPY and ran ALTER ROLE ... SUPERUSER as the subscription's role;
#  2. a function of the owner's, declared IMMUTABLE, ran in the WAL sender
#     and in the copy, as the replication role.
#
# Now a filter is analysed once, of PostgreSQL's own parts only, stored
# analysed, run from the tree in the WAL sender and deparsed for the copy
# in the copy's own session.  Also checked: a renamed column keeps its
# filter working (the tree names columns by number) in both the stream and
# a later copy, and a filter set on a partitioned table applies to a
# partition whose columns are in another order.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($p, $s, $s2) = concord_nodes(3, prefix => 'rf');
my $tables = q{
	CREATE TABLE evil (id int PRIMARY KEY, v text);
	CREATE TABLE renamed (id int PRIMARY KEY, region text NOT NULL, v text);
	CREATE TABLE parted (id int NOT NULL, region text NOT NULL, v text) PARTITION BY LIST (region);
};
run_on_all([ $p, $s, $s2 ], $tables);
# The partition: the same columns, in another order, after a dropped one.
$p->safe_psql('postgres', q{
	CREATE TABLE parted_eu (junk int, v text, region text NOT NULL, id int NOT NULL);
	ALTER TABLE parted_eu DROP COLUMN junk;
	ALTER TABLE parted ATTACH PARTITION parted_eu FOR VALUES IN ('eu');
});
run_on_all([ $s, $s2 ], q{CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu')});

# An insert-only set, so that filters may read any column.
$p->safe_psql('postgres', q{
	SELECT concord.create_replication_set('filtered', replicate_update := false,
	                                      replicate_delete := false, replicate_truncate := false);
	CREATE ROLE mallory LOGIN;
	ALTER TABLE evil OWNER TO mallory;
	GRANT USAGE ON SCHEMA concord TO mallory;
	GRANT EXECUTE ON FUNCTION concord.replication_set_add_table(name, regclass, boolean, text[], text)
	  TO mallory;
	INSERT INTO evil SELECT g, 'row ' || g FROM generate_series(1, 5) g;
	CREATE FUNCTION mallory_fn(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
	ALTER FUNCTION mallory_fn(int) OWNER TO mallory;
});
$_->safe_psql('postgres', q{
	SELECT concord.create_replication_set('filtered', replicate_update := false,
	                                      replicate_delete := false, replicate_truncate := false)})
  foreach ($s, $s2);

# 2. A user's function, even IMMUTABLE, is refused.
my ($rc, $out, $err) = $p->psql('postgres', q{
	SET ROLE mallory;
	SELECT concord.replication_set_add_table('filtered', 'evil', row_filter := 'public.mallory_fn(id)')});
like($err, qr/row_filter cannot use user-defined functions/, 'a user-defined function is refused');
like($err, qr/built-in types, operators, functions and collations/, 'saying what a filter may use');
$p->safe_psql('postgres', q{SELECT concord.replication_set_remove_table('filtered', 'evil')
	FROM concord.replication_set_table WHERE set_reloid = 'evil'::regclass});

# 1. The filter that was an injection: one literal under
#    standard_conforming_strings off, IS NULL.
my $filter = q{'\' IS NULL OR true)) TO STDOUT; COMMIT; ALTER ROLE mallory SUPERUSER; --' IS NULL};
$p->safe_psql('postgres', qq{
	SET ROLE mallory;
	SET standard_conforming_strings = off;
	SELECT concord.replication_set_add_table('filtered', 'evil', row_filter := \$f\$$filter\$f\$)});
like($p->safe_psql('postgres', q{SELECT row_filter FROM concord.replication_set_table WHERE set_reloid = 'evil'::regclass}),
	qr/^\('''.*--' IS NULL\)$/, 'the filter is stored as one literal, deparsed');

# The others, as the tables' owner.
$p->safe_psql('postgres', q{
	SELECT concord.replication_set_add_table('filtered', 'renamed', row_filter := $$region = 'eu'$$);
	SELECT concord.replication_set_add_table('filtered', 'parted', row_filter := 'id > 10');
	INSERT INTO renamed VALUES (1, 'eu', 'before'), (2, 'us', 'before');
	INSERT INTO parted (id, region, v) VALUES (5, 'eu', 'low'), (15, 'eu', 'high');
});

subscribe($s, $p, sets => ['filtered']);
wait_sync_complete([$s]);
is($p->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
	'the initial copy ran no statement of the filter: mallory is no superuser');
is($s->safe_psql('postgres', 'SELECT count(*) FROM evil'), '0',
	'the copy applied the filter as analysed (a literal IS NULL: no row)');
is($s->safe_psql('postgres', q{SELECT string_agg(id || ':' || region, ',' ORDER BY id) FROM renamed}),
	'1:eu', 'the copy filters renamed');
is($s->safe_psql('postgres', q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM parted}),
	'15:high', 'the copy filters the partitioned table');

# The stream, after a rename of the filtered column (on both nodes: columns
# are matched by name).
$s->safe_psql('postgres', 'ALTER TABLE renamed RENAME COLUMN region TO area');
$p->safe_psql('postgres', q{
	ALTER TABLE renamed RENAME COLUMN region TO area;
	INSERT INTO renamed VALUES (3, 'eu', 'after'), (4, 'us', 'after');
	INSERT INTO parted (id, region, v) VALUES (7, 'eu', 'low'), (17, 'eu', 'high');
	INSERT INTO evil VALUES (6, 'row 6');
});
wait_for_apply_all([$s]);
is($p->safe_psql('postgres', q{SELECT row_filter FROM concord.replication_set_table WHERE set_reloid = 'renamed'::regclass}),
	"(area = 'eu'::text)", 'the filter\'s text follows the rename');
is($s->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM renamed'), '1,3',
	'after the rename, the stream filters by the column it was set on');
is($s->safe_psql('postgres', q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM parted}),
	'15:high,17:high', 'a partition with its columns in another order is filtered by the parent\'s filter');
is($s->safe_psql('postgres', 'SELECT count(*) FROM evil'), '0', 'the stream applies the literal filter too');

# A new subscriber's copy after the rename: deparsed with the new name.
$s2->safe_psql('postgres', 'ALTER TABLE renamed RENAME COLUMN region TO area');
subscribe($s2, $p, sets => ['filtered']);
wait_sync_complete([$s2]);
is($s2->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM renamed'), '1,3',
	'a copy after the rename filters by the renamed column');
is($p->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
	'mallory is still no superuser');

# A column a filter uses cannot be dropped or retyped while the filter
# stands: the stored filter could not run, and the changes between the
# ALTER and a new filter would stop the stream for good.
$s->safe_psql('postgres', 'CREATE TABLE typed (id int PRIMARY KEY, n bigint)');
$p->safe_psql('postgres', q{
	CREATE TABLE typed (id int PRIMARY KEY, n int);
	SELECT concord.replication_set_add_table('filtered', 'typed', row_filter := 'n > 0');
});
($rc, $out, $err) = $p->psql('postgres', 'ALTER TABLE typed ALTER COLUMN n TYPE bigint');
like($err, qr/the row filter of table "public.typed" uses a column that was dropped or whose type changed/,
	'ALTER COLUMN TYPE of a filtered column is refused');
($rc, $out, $err) = $p->psql('postgres', 'ALTER TABLE typed DROP COLUMN n');
like($err, qr/uses a column that was dropped/, 'DROP COLUMN of a filtered column is refused');
$p->safe_psql('postgres', 'ALTER TABLE typed RENAME COLUMN n TO m; ALTER TABLE typed RENAME COLUMN m TO n');

# Past the event trigger (session_replication_role = replica), the WAL
# sender refuses the filter, saying so, rather than misread it.
$p->safe_psql('postgres', q{
	SET session_replication_role = replica;
	ALTER TABLE typed ALTER COLUMN n TYPE bigint;
	RESET session_replication_role;
	INSERT INTO typed VALUES (1, 1);
});
my $sub = $s->safe_psql('postgres', 'SELECT subscription_name FROM concord.subscription_status');
ok($s->poll_query_until('postgres', qq{
		SELECT status = 'down' AND last_error LIKE '%the row filter of table "public.typed" uses a column that was dropped or whose type changed%'
		  FROM concord.subscription_status WHERE subscription_name = '$sub'}),
	'the stream stops saying so, instead of misreading the filter');

# A dump restored into another database numbers a table's columns anew:
# the stored filters are analysed again from their text when it becomes
# the node (reclaim_node_identity); until then it is a copy.
$p->safe_psql('postgres', q{
	CREATE TABLE gappy (junk int, id int PRIMARY KEY, c int, d int);
	ALTER TABLE gappy DROP COLUMN junk;
	SELECT concord.replication_set_add_table('filtered', 'gappy', row_filter := 'c > 5');
	CREATE DATABASE restored;
});
my $dump = PostgreSQL::Test::Utils::tempdir() . '/rf.dump';
$p->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $p->connstr('postgres') ], 'pg_dump of the provider');
$p->command_ok([ 'pg_restore', '-d', $p->connstr('restored'), $dump ], 'restored into another database');
is($p->safe_psql('restored', 'SELECT identity FROM concord.node_status'), 'copy',
	'the restored database is a copy');
$p->safe_psql('restored', 'SELECT concord.reclaim_node_identity()');
is($p->safe_psql('restored', q{SELECT concord.row_filter_sql(set_id, set_reloid)
		FROM concord.replication_set_table WHERE set_reloid = 'gappy'::regclass}),
	'(c > 5)', 'after reclaim_node_identity() the filter reads the same column');

done_testing();
