# A subscription's slot still held by another WAL sender when its worker
# starts (most often the one that served the previous worker, which the
# provider has not noticed gone yet) is waited for a short while instead of
# failing at once: the error that ended the previous worker stays the
# subscription's last_error, rather than the transient "is active for PID".
# A slot held longer than that is still reported.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);

run_on_all(\@nodes, q{CREATE TABLE held_t (id int PRIMARY KEY, v text)});
add_tables(\@nodes, ['held_t']);
my $sub = subscribe($n2, $n1);
wait_replicating(\@nodes, 'subscribed');
wait_sync_complete(\@nodes);

my $slot = $n2->safe_psql('postgres',
	"SELECT slot_name FROM concord.subscription WHERE sub_name = '$sub'");
ok($slot ne '', "the subscription's slot is $slot");

sub disable_and_wait_gone
{
	$n2->safe_psql('postgres',
		"SELECT concord.alter_subscription_disable('$sub')");
	ok( $n1->poll_query_until('postgres',
			"SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'"),
		'the disabled subscription no longer holds its slot');
	return;
}

# Holds the slot from a consumer of our own, as a WAL sender of a
# previous worker would.
sub hold_slot
{
	my $bindir = $n1->config_data('--bindir');
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			"$bindir/pg_recvlogical", '-d', $n1->connstr('postgres'),
			'--slot', $slot, '--start', '-f', '/dev/null',
			'-o', 'proto_version=2', '-o', 'replication_sets=default',
			'-o', 'subscriber_node=' . $n2->name
		],
		'>', \$out, '2>', \$err);
	ok( $n1->poll_query_until('postgres',
			"SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'"),
		'another consumer holds the slot');
	return $h;
}

my $log_offset;

# 1. Held for a moment: the worker waits and tries again, the subscription
#    is not shown down meanwhile, and streams once the slot is free.
disable_and_wait_gone();
my $holder = hold_slot();
$log_offset = -s $n1->logfile;
$n2->safe_psql('postgres', "SELECT concord.alter_subscription_enable('$sub')");
# Two refusals: the worker tried, and tried again (a worker that failed at
# the first would have recorded its error before the second attempt).
$n1->wait_for_log(
	qr/(?s)replication slot "\Q$slot\E" is active for PID.*replication slot "\Q$slot\E" is active for PID/,
	$log_offset);
my $during = $n2->safe_psql('postgres',
	"SELECT status || ' ' || coalesce(last_error, '') FROM concord.subscription_status
	  WHERE subscription_name = '$sub'");
is($during, 'initializing ', 'while the slot is held for a moment, the subscription is not down');
$holder->kill_kill;
$holder->finish;
wait_replicating(\@nodes, 'after a short hold');
$n1->safe_psql('postgres', q{INSERT INTO held_t VALUES (1, 'after the hold')});
wait_for_apply_all(\@nodes, label => 'row after the hold');
is($n2->safe_psql('postgres', 'SELECT v FROM held_t WHERE id = 1'),
	'after the hold', 'the row written after the hold arrived');

# 2. Held for good: reported after the wait, and streaming resumes once the
#    slot is free.
disable_and_wait_gone();
$holder = hold_slot();
$n2->safe_psql('postgres', "SELECT concord.alter_subscription_enable('$sub')");
ok( $n2->poll_query_until('postgres',
		"SELECT status = 'down' AND last_error LIKE '%is active for PID%'
		   FROM concord.subscription_status WHERE subscription_name = '$sub'"),
	'a slot held for good is reported in last_error');
$holder->kill_kill;
$holder->finish;
wait_replicating(\@nodes, 'after the slot is free');
$n1->safe_psql('postgres', q{INSERT INTO held_t VALUES (2, 'after the release')});
wait_for_apply_all(\@nodes, label => 'row after the release');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM held_t'), '2',
	'both rows arrived');

done_testing();
