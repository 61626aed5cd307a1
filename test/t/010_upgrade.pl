# Upgrades: from every earlier version whose install script ships
# (sql/concord--V.sql), ALTER EXTENSION concord UPDATE gives exactly the
# objects of a fresh install of the current version: tables and their
# columns, defaults, constraints, indexes and options; views; functions
# with their signatures, bodies and settings; types; the event triggers;
# privileges; comments; what pg_dump includes.  Then two nodes set up at
# the oldest version keep replicating across the upgrade, their catalogs
# intact.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = "$FindBin::RealBin/../..";
my ($current) = slurp_file("$top/concord.control") =~ /^default_version\s*=\s*'([^']+)'/m;
my @old = sort { version_cmp($a, $b) } grep { $_ ne $current }
  map { m{/concord--([0-9.]+)\.sql$} ? $1 : () } glob("$top/sql/concord--*.sql");
note("current version $current; earlier install scripts: @old");
ok(scalar @old, 'at least one earlier version ships an install script');

sub version_cmp
{
	my ($a, $b) = @_;
	my @a = split /\./, $a;
	my @b = split /\./, $b;
	while (@a || @b)
	{
		my $c = (shift(@a) // 0) <=> (shift(@b) // 0);
		return $c if $c;
	}
	return 0;
}

# One line per property of every object of the extension, sorted.
my $describe = <<'SQL';
WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'concord'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (
    SELECT c.oid, c.oid::regclass::text AS name, c.relkind FROM pg_class c
     WHERE c.oid IN (SELECT objid FROM members WHERE classid = 'pg_class'::regclass)),
lines AS (
    -- the member objects themselves
    SELECT pg_describe_object(classid, objid, 0) AS line FROM members
    UNION ALL
    -- relations: kind, options, privileges, comment
    SELECT format('%s: relkind %s persistence %s options %s replident %s acl %s comment %s',
                  r.name, c.relkind, c.relpersistence, c.reloptions, c.relreplident,
                  c.relacl, obj_description(c.oid, 'pg_class'))
      FROM rels r JOIN pg_class c ON c.oid = r.oid
    UNION ALL
    -- columns, in order
    SELECT format('%s.%s: #%s %s notnull %s default %s identity %s generated %s collation %s acl %s comment %s',
                  r.name, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity,
                  a.attgenerated, a.attcollation::regcollation, a.attacl,
                  col_description(r.oid, a.attnum))
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid
      LEFT JOIN pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('%s: constraint %s %s', r.name, co.conname, pg_get_constraintdef(co.oid))
      FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('%s: index %s', r.name, pg_get_indexdef(i.indexrelid))
      FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('%s: trigger %s', r.name, pg_get_triggerdef(t.oid))
      FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('%s: view %s', r.name, pg_get_viewdef(r.oid))
      FROM rels r WHERE r.relkind = 'v'
    UNION ALL
    SELECT format('%s: sequence %s %s %s %s %s %s', r.name, s.seqtypid::regtype, s.seqstart,
                  s.seqincrement, s.seqmax, s.seqmin, s.seqcycle)
      FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    -- functions: the whole definition, privileges, comment
    SELECT format('%s: %s acl %s comment %s', p.oid::regprocedure, pg_get_functiondef(p.oid),
                  p.proacl, obj_description(p.oid, 'pg_proc'))
      FROM pg_proc p WHERE p.oid IN (SELECT objid FROM members WHERE classid = 'pg_proc'::regclass)
    UNION ALL
    -- types: kind, attributes of composite types, privileges, comment
    SELECT format('%s: type %s acl %s comment %s attributes %s', t.oid::regtype, t.typtype, t.typacl,
                  obj_description(t.oid, 'pg_type'),
                  (SELECT string_agg(format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod)),
                                     ', ' ORDER BY a.attnum)
                     FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0))
      FROM pg_type t WHERE t.oid IN (SELECT objid FROM members WHERE classid = 'pg_type'::regclass)
    UNION ALL
    SELECT format('event trigger %s: %s %s %s %s', e.evtname, e.evtevent, e.evtfoid::regprocedure,
                  e.evtenabled, e.evttags)
      FROM pg_event_trigger e WHERE e.oid IN (SELECT objid FROM members WHERE classid = 'pg_event_trigger'::regclass)
    UNION ALL
    SELECT format('schema %s: owner is superuser %s acl %s comment %s', n.nspname,
                  (SELECT rolsuper FROM pg_roles WHERE oid = n.nspowner), n.nspacl,
                  obj_description(n.oid, 'pg_namespace'))
      FROM pg_namespace n WHERE n.nspname = 'concord'
    UNION ALL
    -- what pg_dump includes
    SELECT format('dumped: %s where %s', c::regclass, coalesce(ext.extcondition[i], ''))
      FROM ext, unnest(ext.extconfig) WITH ORDINALITY AS u(c, i)
)
SELECT line FROM lines ORDER BY line COLLATE "C";
SQL

my $node = concord_node('upg', extension => 0);
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION concord');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'concord'"),
	$current, "a fresh install is at $current");
my $fresh = $node->safe_psql('fresh', $describe);
cmp_ok(scalar(split /\n/, $fresh), '>', 100, 'the description of a fresh install has every object');

foreach my $v (@old)
{
	my $db = 'from_' . ($v =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION concord VERSION '$v'");
	my $before = $node->safe_psql($db, $describe);
	isnt($before, $fresh, "version $v differs from $current before the update");
	$node->safe_psql($db, 'ALTER EXTENSION concord UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'concord'"),
		$current, "ALTER EXTENSION concord UPDATE takes $v to $current");
	my $after = $node->safe_psql($db, $describe);
	is($after, $fresh, "$v updated to $current has the objects of a fresh $current install")
	  or diag(diff_lines($fresh, $after));
}

# Privileges granted on the extension's objects survive an update that
# makes them again (a monitoring role's, as the manual suggests).
$node->safe_psql('postgres', 'CREATE DATABASE grants; CREATE ROLE watcher');
$node->safe_psql('grants', "CREATE EXTENSION concord VERSION '$old[0]'");
$node->safe_psql('grants', q{
	GRANT USAGE ON SCHEMA concord TO watcher;
	GRANT SELECT ON concord.subscription_status TO watcher;
	GRANT EXECUTE ON FUNCTION concord.subscription_status_internal() TO watcher;
	GRANT SELECT ON concord.replication_set_table TO watcher;
	ALTER EXTENSION concord UPDATE;
});
is($node->safe_psql('grants', q{
		SELECT has_function_privilege('watcher', 'concord.row_filter_sql(oid, regclass)', 'EXECUTE')
		    || ' ' || has_function_privilege('public', 'concord.row_filter_sql(oid, regclass)', 'EXECUTE')}),
	'true false', 'a role that could read the sets\' tables may call row_filter_sql after the update (0.3.0)');
is($node->safe_psql('grants', q{
		SELECT has_table_privilege('watcher', 'concord.subscription_status', 'SELECT')
		    || ' ' || has_function_privilege('watcher', 'concord.subscription_status_internal()', 'EXECUTE')
		    || ' ' || has_table_privilege('public', 'concord.subscription_status', 'SELECT')}),
	'true true false', "grants on the status view and its function are kept by the update from $old[0]");
is($node->safe_psql('grants', q{SET ROLE watcher; SELECT count(*) FROM concord.subscription_status}),
	'0', 'and the role can read the view after it');
$node->stop;

# Lines only in one of two descriptions.
sub diff_lines
{
	my ($want, $got) = @_;
	my %w = map { $_ => 1 } split /\n/, $want;
	my %g = map { $_ => 1 } split /\n/, $got;
	return join("\n",
		(map { "missing after update: $_" } grep { !$g{$_} } sort keys %w),
		(map { "extra after update:   $_" } grep { !$w{$_} } sort keys %g));
}

# --- two nodes across the upgrade ---------------------------------------------
# Set up at the oldest version, replicating both ways, with a conflict in
# the history; upgraded one after the other while they keep writing.
my $oldest = $old[0];
my @nodes = map { concord_node($_, extension => 0) } qw(up_a up_b);
foreach my $n (@nodes)
{
	my $dsn = quote_literal($n->connstr('postgres'));
	$n->safe_psql('postgres',
		"CREATE EXTENSION concord VERSION '$oldest';
		 CREATE EXTENSION pg_walinspect;
		 SELECT concord.create_node('" . $n->name . "', $dsn);
		 CREATE TABLE item (id int PRIMARY KEY, v text);
		 SELECT concord.replication_set_add_table('default', 'item');
		 CREATE TABLE fitem (id int PRIMARY KEY, v text);
		 SELECT concord.replication_set_add_table('default', 'fitem', row_filter := 'id % 2 = 0');");
}
my ($a, $b) = @nodes;
# A provider whose SQL objects predate 0.3.0 keeps its row filters as text
# only, which the initial copy never pastes into SQL (review #2): the copy
# of a filtered table from it is refused, saying so, until it is updated.
subscribe($a, $b, name => 'copy_from_old');
ok($a->poll_query_until('postgres', q{
		SELECT status = 'down' AND last_error LIKE '%cannot copy table public.fitem: the provider does not give its row filter analysed%'
		  FROM concord.subscription_status WHERE subscription_name = 'copy_from_old'}),
	"the copy of a filtered table from a $oldest provider is refused");
unsubscribe($a, 'copy_from_old');
subscribe($a, $b, synchronize_data => 0);
subscribe($b, $a, synchronize_data => 0);
wait_replicating(\@nodes);
$a->safe_psql('postgres', "INSERT INTO item SELECT g, 'a' FROM generate_series(1, 50) g");
$b->safe_psql('postgres', "INSERT INTO item SELECT g, 'b' FROM generate_series(51, 100) g");
wait_for_apply_all(\@nodes);

my $catalog_query = "SELECT (SELECT string_agg(node_name || ':' || is_local, ',' ORDER BY node_name) FROM concord.node)
    || ' ' || (SELECT string_agg(sub_name || ':' || enabled, ',' ORDER BY sub_name) FROM concord.subscription)
    || ' ' || (SELECT count(*) FROM concord.replication_set_table)";
my %catalogs_before = map { $_->name => $_->safe_psql('postgres', $catalog_query) } @nodes;

foreach my $k (0 .. $#nodes)
{
	my $n = $nodes[$k];
	$n->safe_psql('postgres', 'ALTER EXTENSION concord UPDATE');
	is($n->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'concord'"),
		$current, $n->name . " updated from $oldest to $current while replicating");
	is($n->safe_psql('postgres', $catalog_query), $catalogs_before{ $n->name },
		$n->name . ': nodes, subscriptions and set members kept');
	# both nodes write between the two updates and after the last
	foreach my $j (0 .. $#nodes)
	{
		my $first = 1000 + 100 * $k + 10 * $j;
		$nodes[$j]->safe_psql('postgres',
			"INSERT INTO item SELECT g, 'after' FROM generate_series($first + 1, $first + 10) g;
			 INSERT INTO fitem SELECT g, '$j' FROM generate_series($first + 1, $first + 10) g");
	}
}
wait_for_apply_all(\@nodes);
is($a->safe_psql('postgres', 'SELECT count(*) FROM item'), '140',
	'every row written before, between and after the updates is on up_a');
# Row filters stored as text before 0.3.0 are analysed by the update; the
# changes written before it are decoded with the text, those after with
# the tree.
is($a->safe_psql('postgres', q{SELECT row_filter || ' ' || (row_filter_expr IS NOT NULL)
		|| ' ' || concord.row_filter_sql(set_id, set_reloid)
		FROM concord.replication_set_table WHERE set_reloid = 'fitem'::regclass}),
	'((id % 2) = 0) true ((id % 2) = 0)', 'the row filter is stored analysed after the update');
foreach my $j (0 .. $#nodes)
{
	is($nodes[$j]->safe_psql('postgres',
			"SELECT count(*) FILTER (WHERE v <> '$j') || ' ' || count(*) FILTER (WHERE v <> '$j' AND id % 2 = 1) FROM fitem"),
		'10 0', $nodes[$j]->name . ' received the filtered rows of its peer (10 of 20), even ones only');
}
# The origins made before the update are in concord.origin_history, so the
# versions written under them keep their node (review #8).
is($a->safe_psql('postgres', q{SELECT string_agg(DISTINCT node_name, ',') FROM concord.origin_history}),
	'up_b', "up_a's origin history holds the origin of up_b made before the update");
is($a->safe_psql('postgres',
		'SELECT string_agg(DISTINCT (concord.row_version(xmin)).origin_node, \',\') FROM item WHERE id BETWEEN 51 AND 100'),
	'up_b', 'the rows up_b wrote before the update are versions of up_b');
checksums_match(\@nodes, ['item'], 'after the upgrade');
is($a->safe_psql('postgres', "SELECT status FROM concord.subscription_status"),
	'replicating', 'the subscription of up_a replicates after the upgrade');

done_testing();
