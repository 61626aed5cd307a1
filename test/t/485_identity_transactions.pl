# A node's identity row is transactional, its marker slot is not (review
# of 0.3.0's node identities).  Before:
#
#  1. BEGIN; drop_node(); ROLLBACK left the row but dropped the marker: the
#     node took itself for a copy, stopped its workers, and its peers'
#     streams from it stopped too;
#  2. every rolled-back create_node left a marker slot behind for good, as
#     did DROP DATABASE and DROP EXTENSION;
#  3. a database copied with CREATE DATABASE ... TEMPLATE that reclaimed the
#     identity shared the original's marker, and its drop_node dropped it:
#     the original became a copy.
#
# Now markers are named after their database, made before the row that
# names them and dropped only at the commit of the change that stops
# naming them (the manager drops the ones rolled-back transactions left,
# the launcher those of dropped databases).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($a, $b) = concord_nodes(2, prefix => 'idt', extra_conf => 'max_prepared_transactions = 2');
setup_mesh([ $a, $b ], 'CREATE TABLE t (id int PRIMARY KEY, v text);', ['t']);

sub markers
{
	my ($node, $db) = @_;
	return $node->safe_psql($db // 'postgres', q{
		SELECT count(*) FROM pg_replication_slots
		 WHERE slot_type = 'physical'
		   AND slot_name LIKE 'concord\_node\_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '\_%'});
}

# Polls until database $db has exactly one marker (the manager drops the
# others after the commit or rollback that stopped naming them).
sub one_marker
{
	my ($node, $db) = @_;
	return $node->poll_query_until($db, q{
		SELECT count(*) = 1 FROM pg_replication_slots
		 WHERE slot_type = 'physical'
		   AND slot_name LIKE 'concord\_node\_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '\_%'});
}

sub all_markers
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'concord\_node\_%'});
}

is(markers($a), '1', 'a node has one marker slot');

# drop_subscription drops the provider's slot at once: it refuses to run
# where a rollback could keep the subscription without it.
my ($rc, $out, $err) = $a->psql('postgres', q{
	BEGIN;
	SELECT concord.drop_subscription(subscription_name) FROM concord.subscription_status;
	ROLLBACK;
});
like($err, qr/concord.drop_subscription\(\) cannot run inside a transaction block/,
	'drop_subscription refuses a transaction block');

# A node with no subscription, where drop_node may run.
$a->safe_psql('postgres', 'CREATE DATABASE solo');
$a->safe_psql('solo', q{CREATE EXTENSION concord; SELECT concord.create_node('solo', 'dbname=solo')});
is(markers($a, 'solo'), '1', 'node solo has its marker');

# 1. A rolled-back drop_node leaves the node whole.
$a->safe_psql('solo', q{
	BEGIN;
	SELECT concord.drop_node('solo');
	ROLLBACK;
});
is($a->safe_psql('solo', 'SELECT identity FROM concord.node_status'), 'this node',
	'after a rolled-back drop_node the database is still its node');
is(markers($a, 'solo'), '1', 'with its marker');

# 2. A rolled-back create_node (the node made again under another name)
#    leaves a marker for a moment; the manager drops it.
$a->safe_psql('solo', q{
	BEGIN;
	SELECT concord.drop_node('solo');
	SELECT concord.create_node('solo_again', 'dbname=solo');
	ROLLBACK;
});
ok(one_marker($a, 'solo'),
	'the marker a rolled-back create_node left is dropped');
is($a->safe_psql('solo', 'SELECT identity FROM concord.node_status'), 'this node',
	'and the node is still its node');

# A committed drop_node and create_node: one marker, the new one.
my $before = $a->safe_psql('solo', 'SELECT marker_slot FROM concord.node_identity');
$a->safe_psql('solo', q{
	BEGIN;
	SELECT concord.drop_node('solo');
	SELECT concord.create_node('solo', 'dbname=solo');
	COMMIT;
});
ok(one_marker($a, 'solo'),
	'a node made again has one marker (the manager dropped the old one after the commit)');
isnt($a->safe_psql('solo', 'SELECT marker_slot FROM concord.node_identity'), $before, 'a new one');

# A committed reclaim replaces the marker.
my $old = $a->safe_psql('postgres', 'SELECT marker_slot FROM concord.node_identity');
$a->safe_psql('postgres', "SELECT pg_drop_replication_slot('$old')");
$a->safe_psql('postgres', 'SELECT concord.reclaim_node_identity()');
ok(one_marker($a, 'postgres'),
	'a reclaim leaves one marker');
isnt($a->safe_psql('postgres', 'SELECT marker_slot FROM concord.node_identity'), $old,
	'a new one');
$a->safe_psql('postgres', "INSERT INTO t VALUES (1, 'after the reclaim')");
wait_for_apply_all([ $a, $b ], label => 'after the reclaim');
is($b->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'after the reclaim',
	'its peer streams from it with the new marker, across changes written before it');

# 3. A database copied with CREATE DATABASE ... TEMPLATE: a node with no
#    subscription (its manager goes dormant, so nothing is connected).
ok($a->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = 'solo'}),
	'nothing is connected to solo');
$a->safe_psql('postgres', 'CREATE DATABASE solo_copy TEMPLATE solo');
is($a->safe_psql('solo_copy', 'SELECT identity FROM concord.node_status'), 'copy',
	'the copy knows it is one');
$a->safe_psql('solo_copy', 'SELECT concord.reclaim_node_identity()');
is($a->safe_psql('solo_copy', 'SELECT identity FROM concord.node_status'), 'this node',
	'after reclaim_node_identity() it is a node');
is(markers($a, 'solo_copy'), '1', 'with a marker of its own');
$a->safe_psql('solo_copy', q{SELECT concord.drop_node('solo')});
is($a->safe_psql('solo', 'SELECT identity FROM concord.node_status'), 'this node',
	'its drop_node leaves the original whole');
is(markers($a, 'solo'), '1', 'and the original\'s marker');

# A transaction that changes the identity cannot be prepared: another
# session's sweep would take its new marker for a leftover.
($rc, $out, $err) = $a->psql('solo', q{
	BEGIN;
	SELECT concord.drop_node('solo');
	SELECT concord.create_node('solo', 'dbname=solo');
	PREPARE TRANSACTION 'new identity';
});
like($err, qr/cannot prepare a transaction that changed concord's node identity/,
	'PREPARE TRANSACTION of a node made again is refused');
is($a->safe_psql('solo', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'nothing is left prepared');
ok(one_marker($a, 'solo'),
	'and solo keeps one marker');
is($a->safe_psql('solo', 'SELECT identity FROM concord.node_status'), 'this node', 'solo is still its node');

# DROP DATABASE and DROP EXTENSION leave no marker.
$a->safe_psql('solo_copy', q{SELECT concord.create_node('solo_copy', 'dbname=solo_copy')});
ok(one_marker($a, 'solo_copy'),
	'the copy is a node again, with one marker');
$a->safe_psql('postgres', 'DROP DATABASE solo_copy');
ok($a->poll_query_until('postgres', q{
		SELECT count(*) = 2 FROM pg_replication_slots WHERE slot_name LIKE 'concord\_node\_%'}),
	'the launcher drops the marker of a dropped database');
$a->safe_psql('solo', 'DROP EXTENSION concord');
is(all_markers($a), '1', 'DROP EXTENSION drops the database\'s marker');
is($a->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'this node',
	'and the other database is still its node');

done_testing();
