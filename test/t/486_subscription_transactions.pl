# The provider's slot across the transactions of create_subscription and
# drop_subscription, which make and drop it outside them.
#
#  1. A DO block that calls drop_subscription and then raises: the
#     subscription stays, so its slot and origins must stay too.  They were
#     dropped at once, and the subscription kept without them was down for
#     good.  They now go at the end of the transaction.
#  2. A create_subscription whose transaction aborts while the provider
#     cannot be reached: its slot must still go once the provider is back.
#     The aborting backend connected there itself, while it could not be
#     interrupted (review #22), failed, and the slot stayed for good.  The
#     abort now hands the drop to the manager, which retries.
#     2b. Also after a restart of the subscriber meanwhile: the waiting
#     drops were in shared memory only, and the slot stayed for good.  They
#     are now saved with the server's state (concord_slot_drops.state).
#     2c. A saved drop can be stale: a create_subscription of the same
#     name took it back and made its slot again, and the server crashed
#     before the launcher saved the queue again (the file from before the
#     take-back put back in place).  The manager must not drop the live
#     slot: it leaves it, since a subscription uses it.
#     2d. A base backup of the subscriber, taken while a drop waits,
#     starts as a copy: it drops nothing of the original's (its server
#     lacks the marker slot the entry was made under); the original does.
#  3. create_subscription of the same name right after such an abort,
#     while the manager still waits to drop the old slot: it takes the drop
#     back, and succeeds.
#  4. PREPARE TRANSACTION of a transaction that made or dropped a
#     subscription is refused (the slot is outside the transaction), and
#     the slot made goes with the transaction.
#  5. A cancel while drop_subscription waits for the provider at the end
#     of its transaction: the session goes on (the drop's subtransaction
#     was left open under the error), and the subscription stays.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordProxy;
use IO::Socket::INET;
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = concord_node('p');
my $s = concord_node('s', extra_conf => 'max_prepared_transactions = 2');
run_on_all([ $p, $s ], 'CREATE TABLE t (id int PRIMARY KEY, v text);');
add_tables([ $p, $s ], ['t']);
my $sub = subscribe($s, $p, synchronize_data => 0);
wait_replicating([$s], 's subscribes to p');

sub slots_on_p
{
	return $p->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots WHERE slot_type = \'logical\'');
}

# --- 1. DO block -------------------------------------------------------------------
my ($ret, $out, $err) = $s->psql('postgres', qq{
	DO \$\$ BEGIN
		PERFORM concord.drop_subscription('$sub');
		RAISE EXCEPTION 'changed my mind';
	END \$\$;});
like($err, qr/changed my mind/, 'the DO block raised after drop_subscription');
is(slots_on_p(), '1', "the subscription's slot is still on p");
is($s->safe_psql('postgres',
		q{SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'concord\_%'}),
	'1', "the subscription's origin is still on s");
$p->safe_psql('postgres', "INSERT INTO t VALUES (1, 'after the DO block')");
ok(wait_for_apply_one($s, $sub, $p), 'the subscription replicates after the DO block');
is($s->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'after the DO block',
	"p's row written after the DO block reached s");

# A DO block that commits drops them, at its end.
my $dsn_p = quote_literal($p->connstr('postgres'));
$s->safe_psql('postgres',
	"SELECT concord.create_subscription('other', $dsn_p, synchronize_data := false)");
is(slots_on_p(), '2', 'a second subscription has its slot');
$s->safe_psql('postgres', q{DO $$ BEGIN PERFORM concord.drop_subscription('other'); END $$;});
is(slots_on_p(), '1', 'a DO block that commits drops the slot');

# --- 2. abort while the provider cannot be reached ---------------------------------
my $proxy = ConcordProxy->new($p);
my $port = $proxy->port;
my $pdsn = quote_literal($proxy->connstr('postgres'));
my $bg = $s->background_psql('postgres');
$bg->query_safe("BEGIN; SELECT concord.create_subscription('aborted', $pdsn, synchronize_data := false)");
is(slots_on_p(), '2', 'the aborted subscription made its slot on p');
$proxy->stop;
my $log_offset = -s $s->logfile;
$bg->query_safe('ROLLBACK');
$bg->quit;
ok($s->poll_query_until('postgres', 'SELECT true')
	  && wait_for_log_line($s, qr/could not drop replication slot "concord_\d+_\d+" on the provider/, $log_offset),
	'the manager tried to drop the slot while p could not be reached');
is(slots_on_p(), '2', 'the slot is still there');
$proxy = ConcordProxy->new($p, port => $port);
ok($p->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_type = 'logical'}),
	'the manager dropped the slot once p could be reached again');
ok(wait_for_log_line($s, qr/dropped replication slot "concord_\d+_\d+" on the provider: the transaction that made it aborted/, $log_offset),
	"s's log says so");

# The slot of subscription $name being made in $bg's open transaction.
sub slot_of
{
	my ($bg, $name) = @_;
	return $bg->query_safe("SELECT slot_name FROM concord.subscription WHERE sub_name = '$name'");
}

# Whether the launcher saved a waiting drop of $slot in the state file.
sub drop_saved
{
	my ($node, $slot, $want) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT coalesce(position(convert_to('$slot', 'UTF8') IN
			pg_read_binary_file('concord_slot_drops.state', 0, 1000000, true)) > 0, false)},
		$want ? 't' : 'f');
}

# Aborts a create_subscription of $name through the proxy, which is then
# stopped; returns the slot it made.
sub abort_while_unreachable
{
	my ($name) = @_;
	my $bg = $s->background_psql('postgres');
	$bg->query_safe("BEGIN; SELECT concord.create_subscription('$name', $pdsn, synchronize_data := false)");
	my $slot = slot_of($bg, $name);
	$proxy->stop;
	$bg->query_safe('ROLLBACK');
	$bg->quit;
	return $slot;
}

# --- 2b. the same, with a restart of s before p is back ----------------------------
my $slot = abort_while_unreachable('restarted');
is(slots_on_p(), '2', 'the aborted subscription made its slot on p');
ok(drop_saved($s, $slot, 1), 'the launcher saved the waiting drop');
$s->restart;
$proxy = ConcordProxy->new($p, port => $port);
ok($p->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_type = 'logical'}),
	's, restarted, dropped the slot once p could be reached again');
ok(drop_saved($s, $slot, 0), 'and the state file no longer holds it');

# --- 2c. a stale saved drop spares the live slot of its name ----------------------
$slot = abort_while_unreachable('stale');
ok(drop_saved($s, $slot, 1), 'the drop of the slot of the aborted "stale" is saved');
my $state = $s->data_dir . '/concord_slot_drops.state';
my $stale_copy = slurp_file($state);
$proxy = ConcordProxy->new($p, port => $port);
my $made_stale = 0;
foreach my $try (1 .. 100)
{
	($ret, $out, $err) = $s->psql('postgres',
		"SELECT concord.create_subscription('stale', $pdsn, synchronize_data := false)");
	if ($ret == 0) { $made_stale = 1; last; }
	last unless $err =~ /is being dropped/;
	$s->poll_query_until('postgres', 'SELECT true');
}
ok($made_stale, 'create_subscription of the same name takes the drop back and succeeds') or diag($err);
$s->stop('immediate');
# As if the server crashed before the launcher saved the queue again.
open(my $fh, '>', $state) or die "cannot write $state: $!";
binmode $fh;
print $fh $stale_copy;
close $fh;
$log_offset = -s $s->logfile;
$s->start;
ok(wait_for_log_line($s, qr/concord does not drop replication slot "\Q$slot\E" on the provider: subscription "stale" uses it/, $log_offset),
	'the manager leaves the slot that subscription "stale" uses');
ok($s->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'stale'}),
	'"stale" replicates');
is($p->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'1', 'its slot is still on p');
$s->safe_psql('postgres', "SELECT concord.drop_subscription('stale')");
is(slots_on_p(), '1', 'drop_subscription drops it');

# --- 2d. a copy of s drops none of the drops it was copied with -------------------
$slot = abort_while_unreachable('copied');
ok(drop_saved($s, $slot, 1), 'the drop of the slot of the aborted "copied" is saved');
$s->backup('s_backup');
my $copy = PostgreSQL::Test::Cluster->new('s_copy');
$copy->init_from_backup($s, 's_backup');
$copy->start;
ok(wait_for_log_line($copy, qr/concord does not drop replication slot "\Q$slot\E" on the provider: the node that left it to drop is not this server/, 0),
	'the copy leaves the drop to the original');
$proxy = ConcordProxy->new($p, port => $port);
ok($p->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_type = 'logical'}),
	'the original dropped the slot once p could be reached again');
unlike(slurp_file($copy->logfile), qr/dropped replication slot "\Q$slot\E"/, 'the copy did not');
$copy->stop;

# --- 3. the same name again, while the drop waits ----------------------------------
$bg = $s->background_psql('postgres');
$bg->query_safe("BEGIN; SELECT concord.create_subscription('again', $pdsn, synchronize_data := false)");
$proxy->stop;
$log_offset = -s $s->logfile;
$bg->query_safe('ROLLBACK');
$bg->quit;
ok(wait_for_log_line($s, qr/could not drop replication slot/, $log_offset),
	'the drop of the slot of the aborted "again" waits');
$proxy = ConcordProxy->new($p, port => $port);
my $made = 0;
my $last_err = '';
foreach my $try (1 .. 100)
{
	($ret, $out, $last_err) = $s->psql('postgres',
		"SELECT concord.create_subscription('again', $pdsn, synchronize_data := false)");
	if ($ret == 0) { $made = 1; last; }
	last unless $last_err =~ /is being dropped/;
	$s->poll_query_until('postgres', 'SELECT true');
}
ok($made, 'create_subscription of the same name succeeds') or diag($last_err);
ok($s->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'again'}),
	'"again" replicates');
is(slots_on_p(), '2', 'p has the slots of the two subscriptions, nothing more');

# --- 4. PREPARE TRANSACTION --------------------------------------------------------
($ret, $out, $err) = $s->psql('postgres', qq{
	BEGIN;
	SELECT concord.create_subscription('prepared', $pdsn, synchronize_data := false);
	PREPARE TRANSACTION 'with_a_subscription';});
like($err, qr/cannot prepare a transaction that created or dropped a concord subscription/,
	'PREPARE TRANSACTION is refused');
is($s->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'nothing was prepared');
ok($p->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM pg_replication_slots WHERE slot_type = 'logical'}),
	'the slot it made is dropped');

# --- 5. a cancel while the slot is dropped at commit ------------------------------
# The provider's port answers nothing (a listener that never accepts): the
# drop waits to connect, at the end of drop_subscription's transaction,
# and is cancelled there.  The transaction rolls back whole, the session
# goes on, and the subscription stays.
$proxy->stop;
my $hole = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
	Listen => 16, ReuseAddr => 1, Proto => 'tcp') or die "cannot listen on $port: $!";
my $victim = $s->background_psql('postgres', on_error_stop => 0);
my $pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_until(qr/started/, q{\echo started
SELECT concord.drop_subscription('again');
});
ok($s->poll_query_until('postgres',
		"SELECT state = 'active' AND wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $pid"),
	"drop_subscription waits for the provider's answer at commit");
$s->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
my $after = $victim->query('SELECT 41 + 1');
is($after, '42', 'the session goes on after the cancel')
  or diag($victim->{stderr});
$victim->quit;
is($s->safe_psql('postgres',
		"SELECT count(*) FROM concord.subscription WHERE sub_name = 'again'"),
	'1', 'the subscription stays');
close $hole;

done_testing();

# Polls the node's log from offset for a line matching re.
sub wait_for_log_line
{
	my ($node, $re, $offset) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		return 1 if slurp_file($node->logfile, $offset) =~ $re;
		$node->poll_query_until('postgres', 'SELECT true');
	}
	return 0;
}
