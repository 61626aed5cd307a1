# Row filters on a physical copy of a node (a base backup, or a promoted
# standby) before reclaim_node_identity makes it the node.  The copy has
# the node's catalogs, column numbers included, so its filters must be
# guarded and follow renames as on the node.  Before, concord's ALTER
# TABLE check skipped every copy: a filter column could be dropped or
# retyped (reclaim then failed, and the failed-over node stayed a copy),
# and renames were not followed, so that a filter on region, after region
# was renamed old_region and home renamed region, was bound to the former
# home column once the copy became the node.
#
# One node with table ft (id, region, home) in a set, filtered on
# region = 'eu'; a base backup of it started as a server of its own (a
# copy, as a promoted standby is), the original stopped.  On the copy:
# DROP COLUMN region and ALTER COLUMN region TYPE are refused; after the
# two renames the stored filter reads old_region; reclaim_node_identity
# makes it the node, and its filter still reads old_region.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $n = concord_node('rf1');
$n->safe_psql('postgres', q{
	CREATE TABLE ft (id int PRIMARY KEY, region text, home text);
	ALTER TABLE ft REPLICA IDENTITY FULL;
	SELECT concord.create_replication_set('filtered');
	SELECT concord.replication_set_add_table('filtered', 'ft', row_filter := $$region = 'eu'$$);});

$n->backup('rf1_backup');
my $copy = PostgreSQL::Test::Cluster->new('rf1_copy');
$copy->init_from_backup($n, 'rf1_backup');
$copy->start;
$n->stop;
is($copy->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'copy',
	'the base backup is a copy of the node');

my ($ret, $out, $err) = $copy->psql('postgres', 'ALTER TABLE ft DROP COLUMN region');
isnt($ret, 0, 'the copy refuses to drop the filter column');
like($err, qr/uses a column that was dropped or whose type changed/, 'and says why');
($ret, $out, $err) = $copy->psql('postgres', 'ALTER TABLE ft ALTER COLUMN region TYPE varchar(10)');
isnt($ret, 0, "the copy refuses to change the filter column's type");
like($err, qr/uses a column that was dropped or whose type changed/, 'and says why');

$copy->safe_psql('postgres', q{
	ALTER TABLE ft RENAME COLUMN region TO old_region;
	ALTER TABLE ft RENAME COLUMN home TO region;});
is($copy->safe_psql('postgres', q{SELECT row_filter FROM concord.replication_set_table WHERE set_reloid = 'ft'::regclass}),
	"(old_region = 'eu'::text)", "the copy's filter follows the renames");

$copy->safe_psql('postgres', 'SELECT concord.reclaim_node_identity()');
is($copy->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'this node',
	'reclaim_node_identity makes the copy the node');
is($copy->safe_psql('postgres', q{SELECT concord.row_filter_sql(set_id, set_reloid)
	  FROM concord.replication_set_table WHERE set_reloid = 'ft'::regclass}),
	"(old_region = 'eu'::text)", 'the filter still reads the column it was set on');

$copy->stop;
done_testing();
