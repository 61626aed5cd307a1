# A node's marker slot (a physical slot that says which server is the
# node, src/catalog/identity.c) held by a REPLICATION connection: nothing
# stops a REPLICATION role from streaming from it (pg_receivewal --slot, a
# standby's primary_slot_name).  Before, concord counted only markers no
# process held:
#   1. the node's WAL senders took it for a copy and refused every
#      subscriber whose stream (re)started ("the provider database is a
#      copy of node ...");
#   2. an old marker held while drop_node and create_node replaced it was
#      skipped by the manager, which then went dormant (no subscription):
#      the slot stayed for good, and, its holder having set its
#      restart_lsn, kept WAL;
#   3. DROP EXTENSION skipped a held marker and left it behind.
# Pass: 1. the subscriber streams again from a node whose marker is held;
# 2. the old marker is dropped once its holder stops (and DROP EXTENSION
# meanwhile fails and drops no marker, the node's own included); 3. DROP EXTENSION
# fails naming the holder's PID while the marker is held, and succeeds,
# leaving no marker, once it stops.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($a, $b) = concord_nodes(2, prefix => 'mk');
setup_mesh([ $a, $b ], 'CREATE TABLE t (id int PRIMARY KEY, v text);', ['t']);

# pg_receivewal streaming from $slot of $node, as any REPLICATION role may.
sub hold_slot
{
	my ($node, $slot) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pg_receivewal', '-d', $node->connstr('postgres'), "--slot=$slot",
		  '-D', $dir, '--no-loop' ],
		'>', \$out, '2>', \$err);
	ok( $node->poll_query_until('postgres',
			"SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'"),
		"$slot is held by pg_receivewal")
	  or diag($err);
	return $h;
}

sub release_slot
{
	my ($node, $h, $slot) = @_;
	$h->kill_kill;
	ok( $node->poll_query_until('postgres',
			"SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'"),
		"$slot is free again");
	return;
}

sub markers_of
{
	my ($node, $db) = @_;
	return $node->safe_psql($db, q{
		SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots
		 WHERE slot_name LIKE 'concord\_node\_' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '\_%'});
}

# 1. A held marker does not make the node a copy.
my $marker = $a->safe_psql('postgres', 'SELECT marker_slot FROM concord.node_identity');
my $h = hold_slot($a, $marker);
$a->safe_psql('postgres', q{
	SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
	 WHERE slot_type = 'logical' AND active});
$a->safe_psql('postgres', "INSERT INTO t VALUES (1, 'after the marker was taken')");
ok(wait_for_apply_one($b, 'sub_mk2_mk1', $a), 'mk2 streams again from mk1, whose marker is held')
  or diag($b->safe_psql('postgres', 'SELECT status, last_error FROM concord.subscription_status'));
is($a->safe_psql('postgres', 'SELECT identity FROM concord.node_status'), 'this node',
	'mk1 is still this node');
release_slot($a, $h, $marker);

# 2. An old marker held while the node is dropped and made again (a new
#    marker), in a database without subscriptions (whose manager goes
#    dormant).
$a->safe_psql('postgres', 'CREATE DATABASE solo');
$a->safe_psql('solo', 'CREATE EXTENSION concord; SELECT concord.create_node('
	  . quote_literal('solo') . ', ' . quote_literal($a->connstr('solo')) . ')');
my $old = $a->safe_psql('solo', 'SELECT marker_slot FROM concord.node_identity');
$h = hold_slot($a, $old);
my $log_at = -s $a->logfile;
$a->safe_psql('solo', q{SELECT concord.drop_node('solo')});
$a->safe_psql('solo', 'SELECT concord.create_node('
	  . quote_literal('solo') . ', ' . quote_literal($a->connstr('solo')) . ')');
my $new = $a->safe_psql('solo', 'SELECT marker_slot FROM concord.node_identity');
isnt($new, $old, 'create_node made a new marker');
ok($a->wait_for_log(qr/cannot drop marker slot "\Q$old\E" yet: it is in use by PID/, $log_at // 0),
	'the manager says it cannot drop the held old marker yet');
is(markers_of($a, 'solo'), join(',', sort ($old, $new)), 'both markers are there while the old one is held');
# DROP EXTENSION now must fail before it drops any marker, the node's own
# included (it dropped the markers one by one, the new one perhaps before
# it met the held old one).
my ($r, $o, $e) = $a->psql('solo', 'DROP EXTENSION concord');
like($e, qr/marker slot "\Q$old\E" is in use by PID \d+/, 'DROP EXTENSION fails while the old marker is held');
is(markers_of($a, 'solo'), join(',', sort ($old, $new)), 'and leaves both markers');
is($a->safe_psql('solo', 'SELECT identity FROM concord.node_status'), 'this node', 'solo is still its node');
release_slot($a, $h, $old);
ok($a->poll_query_until('solo', q{
		SELECT count(*) = 1 FROM pg_replication_slots
		 WHERE slot_name LIKE 'concord\_node\_' || (SELECT oid FROM pg_database WHERE datname = 'solo') || '\_%'}),
	'the old marker is dropped once its holder stopped')
  or diag(markers_of($a, 'solo'));
is(markers_of($a, 'solo'), $new, 'the new marker stays');

# 3. DROP EXTENSION while the marker is held.
$h = hold_slot($a, $new);
my ($ret, $stdout, $stderr) = $a->psql('solo', 'DROP EXTENSION concord');
isnt($ret, 0, 'DROP EXTENSION fails while the marker is held');
like($stderr, qr/marker slot "\Q$new\E" is in use by PID \d+/, 'and names the marker and its holder');
is($a->safe_psql('solo', q{SELECT count(*) FROM pg_extension WHERE extname = 'concord'}), '1',
	'the extension is still there');
release_slot($a, $h, $new);
$a->safe_psql('solo', 'DROP EXTENSION concord');
is(markers_of($a, 'solo'), '', 'DROP EXTENSION dropped the marker once it was free');

done_testing();
