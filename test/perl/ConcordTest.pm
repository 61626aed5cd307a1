# ConcordTest: helpers for concord's multi-node TAP tests (test/t/*.pl).
#
#   use FindBin;
#   use lib "$FindBin::RealBin/../perl";
#   use ConcordTest;
#
# Nodes are PostgreSQL::Test::Cluster instances configured like
# test/regress.conf (concord preloaded, wal_level = logical, ...), with
# autovacuum off so that their WAL is quiet when nothing happens.  Each
# node gets CREATE EXTENSION concord, concord.create_node(<cluster name>,
# <its connstr>) and pg_walinspect (for the loop-freedom check).
#
# Subscriptions made through subscribe()/build_mesh()/build_ring() are
# remembered here, so that the waits (wait_replicating, wait_for_apply_all,
# slots_caught_up) know every (subscriber, subscription, provider).
#
# Every wait is a poll (poll_query_until) or concord's own wait functions;
# nothing sleeps to synchronise.  The one timed observation is the
# loop-freedom window of check_loop_free().

package ConcordTest;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

our @EXPORT = qw(
  concord_node concord_nodes quote_literal quote_ident run_on_all
  add_tables subscribe unsubscribe build_mesh build_ring subscriptions_of
  wait_replicating wait_sync_complete wait_for_apply_all wait_for_apply_one
  checksum checksums_match count_of slots_caught_up check_loop_free
  status_report start_psql start_psql_file finish_psql
  random_workload apply_model_expectations
  setup_mesh partition_nodes heal_nodes wait_applied_from vacuum_freeze_until_frozen
  conflict_history_of restart_after_crash
  link_down link_up link_applied history_marks no_conflicts_since
  write_with_commit_ts
  delete_update_setup delete_update_race delete_update_converged
  delete_update_history delete_update_history_rows
  delete_update_local_versions delete_update_causal_writes
);

my $regress_conf = slurp_file(dirname(__FILE__) . '/../regress.conf');

# subscriber node name => [ { name => subscription, provider => node }, ... ]
my %SUBS;

# Seconds for concord.wait_for_apply and for blocking calls.
our $TIMEOUT = $PostgreSQL::Test::Utils::timeout_default;

=pod

=head1 NODES

concord_node($name, %opts): a started node.  Options:
  extra_conf  => text appended to postgresql.conf after regress.conf
  autovacuum  => 1 to keep autovacuum on (default off: quiet WAL)
  preload     => 0 for a server without test/regress.conf (no concord)
  extension   => 0 to skip CREATE EXTENSION concord / create_node
  priority    => node priority (default 0)

concord_nodes($n, %opts): nodes n1 .. nN (or $opts{prefix}1 ...).

=cut

sub concord_node
{
	my ($name, %opts) = @_;
	my $preload   = $opts{preload}   // 1;
	my $extension = $opts{extension} // $preload;

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', $regress_conf) if $preload;
	# CONCORD_TEST_APPLY_WORKERS=4: every test with several apply workers
	$node->append_conf('postgresql.conf',
		"concord.apply_workers_per_subscription = $ENV{CONCORD_TEST_APPLY_WORKERS}")
	  if $preload && $ENV{CONCORD_TEST_APPLY_WORKERS};
	$node->append_conf('postgresql.conf', 'autovacuum = off')
	  unless $opts{autovacuum};
	$node->append_conf('postgresql.conf', $opts{extra_conf})
	  if defined $opts{extra_conf};
	$node->start;

	if ($extension)
	{
		my $dsn = quote_literal($node->connstr('postgres'));
		my $priority = $opts{priority} // 0;
		$node->safe_psql('postgres',
			"CREATE EXTENSION concord;
			 CREATE EXTENSION pg_walinspect;
			 SELECT concord.create_node('$name', $dsn, $priority);");
	}
	$SUBS{$name} = [];
	return $node;
}

# restart_after_crash($node): after a process of $node was killed (the
# tests run with restart_after_crash off, so the server goes down), waits
# until the server is down, then starts it again.
sub restart_after_crash
{
	my ($node) = @_;
	my $pidfile = $node->data_dir . '/postmaster.pid';
	foreach (1 .. 10 * $TIMEOUT)
	{
		last unless -e $pidfile;
		Time::HiRes::usleep(100_000);
	}
	$node->_update_pid(0);
	$node->start;
	return;
}

sub concord_nodes
{
	my ($n, %opts) = @_;
	my $prefix = delete $opts{prefix} // 'n';
	return map { concord_node("$prefix$_", %opts) } 1 .. $n;
}

# SQL literal / identifier quoting.
sub quote_literal
{
	my ($s) = @_;
	return 'NULL' unless defined $s;
	(my $q = $s) =~ s/'/''/g;
	return "'$q'";
}

sub quote_ident
{
	my ($s) = @_;
	(my $q = $s) =~ s/"/""/g;
	return "\"$q\"";
}

# Run the same SQL on every node.
sub run_on_all
{
	my ($nodes, $sql) = @_;
	$_->safe_psql('postgres', $sql) foreach @$nodes;
	return;
}

# Add tables (regclass texts, quoted as needed) to a set on every node.
sub add_tables
{
	my ($nodes, $tables, $set) = @_;
	$set //= 'default';
	my $sql = join('',
		map {
			"SELECT concord.replication_set_add_table("
			  . quote_literal($set) . ", "
			  . quote_literal($_)
			  . ");\n"
		} @$tables);
	run_on_all($nodes, $sql);
	return;
}

=pod

=head1 SUBSCRIPTIONS

subscribe($subscriber, $provider, %opts) creates a subscription on
$subscriber and returns its name (default sub_<subscriber>_<provider>).
Options: name, sets (arrayref), synchronize_data (bool),
forward_origins (arrayref), dsn (default $provider->connstr('postgres')),
dsn_suffix (appended to the dsn), apply_delay (an interval; only passed
when given).

=cut

sub _array_literal
{
	my ($list) = @_;
	return quote_literal(
		'{' . join(',', map { my $e = $_; $e =~ s/(["\\])/\\$1/g; "\"$e\"" } @$list) . '}');
}

sub subscribe
{
	my ($sub, $prov, %opts) = @_;
	my $name = $opts{name} // ('sub_' . $sub->name . '_' . $prov->name);
	my $dsn  = $opts{dsn} // $prov->connstr('postgres');
	$dsn .= $opts{dsn_suffix} if defined $opts{dsn_suffix};
	my $sets    = _array_literal($opts{sets} // ['default']);
	my $forward = _array_literal($opts{forward_origins} // []);
	my $sync    = ($opts{synchronize_data} // 1) ? 'true' : 'false';
	my $delay   = defined $opts{apply_delay}
	  ? ",\n\t\t     apply_delay := " . quote_literal($opts{apply_delay}) . "::interval" : '';

	# log_statement = all (set by PostgreSQL::Test::Cluster) would log the
	# DSN as part of our own statement: keep our statement out of the log,
	# so that a password check sees only what concord logs.
	$sub->safe_psql('postgres',
		"SET log_statement = 'none';
		 SET log_min_error_statement = 'panic';
		 SELECT concord.create_subscription(
		     subscription_name := " . quote_literal($name) . ",
		     provider_dsn := " . quote_literal($dsn) . ",
		     replication_sets := ${sets}::text[],
		     synchronize_data := $sync,
		     forward_origins := ${forward}::text[]$delay);");
	push @{ $SUBS{ $sub->name } }, { name => $name, provider => $prov };
	return $name;
}

sub unsubscribe
{
	my ($sub, $name) = @_;
	$sub->safe_psql('postgres',
		"SELECT concord.drop_subscription(" . quote_literal($name) . ")");
	$SUBS{ $sub->name } = [ grep { $_->{name} ne $name } @{ $SUBS{ $sub->name } } ];
	return;
}

# Every node subscribes to every other (forward_origins '{}').
sub build_mesh
{
	my ($nodes, %opts) = @_;
	foreach my $s (@$nodes)
	{
		foreach my $p (@$nodes)
		{
			next if $s == $p;
			subscribe($s, $p, %opts, forward_origins => []);
		}
	}
	return;
}

# Each node subscribes to its predecessor, forwarding every origin:
# n1 -> n2 -> ... -> nN -> n1.
sub build_ring
{
	my ($nodes, %opts) = @_;
	foreach my $i (0 .. $#$nodes)
	{
		my $prov = $nodes->[ $i - 1 ];    # $nodes->[-1] for the first
		subscribe($nodes->[$i], $prov, %opts, forward_origins => ['all']);
	}
	return;
}

sub subscriptions_of
{
	my ($node) = @_;
	return @{ $SUBS{ $node->name } // [] };
}

# One line per subscription on each node, for diagnostics.
sub status_report
{
	my ($nodes) = @_;
	my $out = '';
	foreach my $n (@$nodes)
	{
		my ($ret, $stdout, $stderr) = $n->psql('postgres',
			q{SELECT subscription_name, provider_node, status, received_lsn,
			         applied_lsn, lag_bytes, last_error
			    FROM concord.subscription_status ORDER BY 1});
		$out .= "--- " . $n->name . " (psql rc $ret) ---\n$stdout\n";
		$out .= "stderr: $stderr\n" if $stderr;
	}
	return $out;
}

# Poll until every remembered subscription of every node is 'replicating'.
sub wait_replicating
{
	my ($nodes, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $all = 1;
	foreach my $n (@$nodes)
	{
		my @subs = subscriptions_of($n);
		next unless @subs;
		my $names = join(',', map { quote_literal($_->{name}) } @subs);
		my $want  = scalar @subs;
		my $done  = $n->poll_query_until('postgres',
			"SELECT count(*) = $want AND bool_and(status = 'replicating')
			   FROM concord.subscription_status
			  WHERE subscription_name IN ($names)");
		$all &&= $done;
	}
	ok($all, ($label // 'subscriptions') . ': every subscription is replicating')
	  or diag(status_report($nodes));
	return $all;
}

# concord.wait_for_subscription_sync_complete on every remembered
# subscription of these nodes.
sub wait_sync_complete
{
	my ($nodes) = @_;
	foreach my $n (@$nodes)
	{
		foreach my $s (subscriptions_of($n))
		{
			$n->safe_psql('postgres',
				"SELECT concord.wait_for_subscription_sync_complete("
				  . quote_literal($s->{name}) . ")",
				timeout => $TIMEOUT);
		}
	}
	return;
}

# concord.wait_for_apply($sub, <provider's current LSN>) on $subscriber.
# Returns 1 when it said true.
sub wait_for_apply_one
{
	my ($subscriber, $name, $provider) = @_;
	# The insert position, not the write position: what apply committed
	# asynchronously on the provider (forwarded changes in rings) may not
	# be written yet, and must be waited for too.
	my $lsn = $provider->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
	my $res = $subscriber->safe_psql('postgres',
		"SELECT concord.wait_for_apply(" . quote_literal($name)
		  . ", '$lsn', '${TIMEOUT}s')",
		timeout => $TIMEOUT + 30);
	return $res eq 't' ? 1 : 0;
}

# Catch-up: for every subscription of every node, wait_for_apply from the
# provider's current position.  A change can need several hops (ring):
# 'rounds' rounds (default: number of nodes - 1, at least 1).
sub wait_for_apply_all
{
	my ($nodes, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $rounds = $opts{rounds} // (@$nodes > 1 ? @$nodes - 1 : 1);
	my @failed;
	foreach my $r (1 .. $rounds)
	{
		foreach my $n (@$nodes)
		{
			foreach my $s (subscriptions_of($n))
			{
				push @failed, "round $r: " . $s->{name}
				  unless wait_for_apply_one($n, $s->{name}, $s->{provider});
			}
		}
	}
	ok(!@failed, ($opts{label} // 'catch-up') . ': wait_for_apply returned true everywhere')
	  or diag(join("\n", 'wait_for_apply false for:', @failed, status_report($nodes)));
	return !@failed;
}

=pod

=head1 MESH SETUP

setup_mesh($nodes, $ddl, $tables): run $ddl on every node, add $tables
(arrayref) to the default set, build a mesh of $nodes, then
wait_replicating($nodes, 'mesh built') (one assertion) and
wait_sync_complete($nodes).

=cut

sub setup_mesh
{
	my ($nodes, $ddl, $tables) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	run_on_all($nodes, $ddl);
	add_tables($nodes, $tables);
	build_mesh($nodes);
	wait_replicating($nodes, 'mesh built');
	wait_sync_complete($nodes);
	return;
}

=pod

=head1 PARTITIONS

partition_nodes($nodes, $label) disables every remembered subscription of
every node, then polls each node until no 'concord apply' backend runs
and every subscription's status is 'disabled'; one ok() named
"$label: every subscription disabled, no apply worker runs".

heal_nodes($nodes, $label) enables every remembered subscription again,
then wait_replicating($nodes, $label) and
wait_for_apply_all($nodes, label => $label) (their two assertions).

wait_applied_from($nodes, $writer): every node of $nodes but $writer waits
(wait_for_apply_one) for everything $writer wrote so far, through its
subscription sub_<node>_<writer>.  Returns the subscriptions for which
wait_for_apply said false (empty: all applied).  No assertion.

=cut

# concord.alter_subscription_<disable|enable> of every remembered
# subscription of every node.
sub _alter_subscriptions
{
	my ($nodes, $what) = @_;
	foreach my $n (@$nodes)
	{
		$n->safe_psql('postgres',
			"SELECT concord.alter_subscription_$what(" . quote_literal($_->{name}) . ")")
		  foreach subscriptions_of($n);
	}
	return;
}

sub partition_nodes
{
	my ($nodes, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	_alter_subscriptions($nodes, 'disable');
	my $ok = 1;
	foreach my $n (@$nodes)
	{
		$ok &&= $n->poll_query_until('postgres',
			q{SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'concord apply')
			     AND (SELECT bool_and(status = 'disabled') FROM concord.subscription_status)});
	}
	ok($ok, "$label: every subscription disabled, no apply worker runs")
	  or diag(status_report($nodes));
	return $ok;
}

sub heal_nodes
{
	my ($nodes, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	_alter_subscriptions($nodes, 'enable');
	wait_replicating($nodes, $label);
	wait_for_apply_all($nodes, label => $label);
	return;
}

sub wait_applied_from
{
	my ($nodes, $writer) = @_;
	my @failed;
	foreach my $n (@$nodes)
	{
		next if $n == $writer;
		my $sub = 'sub_' . $n->name . '_' . $writer->name;
		push @failed, $sub unless wait_for_apply_one($n, $sub, $writer);
	}
	return @failed;
}

=pod

=head1 VACUUM FREEZE

vacuum_freeze_until_frozen($node, $table) runs VACUUM (FREEZE) $table on
$node until every page of it is all-frozen in the visibility map (which
also means no dead row version is left on it), up to 100 tries 0.1 s
apart (poll: an old snapshot may still hold a dead version).  Needs
CREATE EXTENSION pg_visibility.  Returns 1 when frozen, 0 otherwise; no
assertion (the caller names its own).

=cut

sub vacuum_freeze_until_frozen
{
	my ($n, $table) = @_;
	my $frozen = 0;
	foreach my $try (1 .. 100)
	{
		$n->safe_psql('postgres', "VACUUM (FREEZE) $table");
		$frozen = $n->safe_psql('postgres',
			"SELECT count(*) > 0 AND bool_and(all_frozen) FROM pg_visibility_map('$table')") eq 't';
		last if $frozen;
		Time::HiRes::sleep(0.1);    # poll: an old snapshot may still hold a dead version
	}
	return $frozen ? 1 : 0;
}

=pod

=head1 CONFLICT HISTORY

conflict_history_of($node, %opts): $node's concord.conflict_history as
text, one row per line in conflict_id order, for diagnostics.  Columns:
conflict_id, subscription_name, conflict_type, resolver, resolution, key,
local_origin, local_row, remote_origin, remote_row; with commit_ts => 1
instead: conflict_id, conflict_type, resolver, resolution, key,
local_origin, local_commit_ts, local_row, remote_origin, remote_commit_ts,
remote_row, resolved_row.

=cut

sub conflict_history_of
{
	my ($n, %opts) = @_;
	return $n->safe_psql('postgres', q{
		SELECT conflict_id, conflict_type, resolver, resolution, key, local_origin, local_commit_ts,
		       local_row, remote_origin, remote_commit_ts, remote_row, resolved_row
		  FROM concord.conflict_history ORDER BY conflict_id}) if $opts{commit_ts};
	return $n->safe_psql('postgres', q{
		SELECT conflict_id, subscription_name, conflict_type, resolver, resolution, key,
		       local_origin, local_row, remote_origin, remote_row
		  FROM concord.conflict_history ORDER BY conflict_id});
}

=pod

=head1 LINKS

A link is a subscription sub_<subscriber>_<provider> (as subscribe()
names it); it is down while disabled.

link_down($subscriber, $provider) disables it and polls until its status
is 'disabled' (one assertion).  link_up($subscriber, $provider) enables
it.  link_applied($subscriber, $provider, $label) waits until it applied
everything the provider wrote so far (one assertion).

history_marks($nodes) returns { node name => highest conflict_id };
no_conflicts_since($nodes, $label, $marks) asserts, per node, that no
conflict was recorded since those marks.

=cut

sub _link_name
{
	my ($sub_node, $prov) = @_;
	return 'sub_' . $sub_node->name . '_' . $prov->name;
}

sub link_down
{
	my ($sub_node, $prov) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $name = _link_name($sub_node, $prov);
	$sub_node->safe_psql('postgres', "SELECT concord.alter_subscription_disable('$name')");
	ok( $sub_node->poll_query_until('postgres',
			"SELECT status = 'disabled' FROM concord.subscription_status WHERE subscription_name = '$name'"),
		"$name is down");
	return;
}

sub link_up
{
	my ($sub_node, $prov) = @_;
	my $name = _link_name($sub_node, $prov);
	$sub_node->safe_psql('postgres', "SELECT concord.alter_subscription_enable('$name')");
	return;
}

sub link_applied
{
	my ($sub_node, $prov, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $name = _link_name($sub_node, $prov);
	ok(wait_for_apply_one($sub_node, $name, $prov), "$label: $name applied everything");
	return;
}

sub history_marks
{
	my ($nodes) = @_;
	return { map { $_->name => $_->safe_psql('postgres',
		'SELECT coalesce(max(conflict_id), 0) FROM concord.conflict_history') } @$nodes };
}

sub no_conflicts_since
{
	my ($nodes, $label, $marks) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	foreach my $n (@$nodes)
	{
		is( $n->safe_psql('postgres',
				"SELECT count(*) FROM concord.conflict_history WHERE conflict_id > $marks->{$n->name}"),
			'0', "$label: no conflict recorded on " . $n->name)
		  or diag(conflict_history_of($n));
	}
	return;
}

# Runs one writing statement in its own transaction on $node; returns
# (rows it changed, its commit timestamp in microseconds, or undef when it
# changed none).  The statement must accept a RETURNING clause.
sub write_with_commit_ts
{
	my ($node, $stmt) = @_;
	my $out = $node->safe_psql('postgres', qq{
BEGIN;
WITH w AS ($stmt RETURNING 1) SELECT count(*) AS n FROM w \\gset
SELECT coalesce(pg_current_xact_id_if_assigned()::text, '0') AS x \\gset
COMMIT;
SELECT :n, CASE WHEN :n > 0
                THEN (extract(epoch FROM pg_xact_commit_timestamp(:'x'::xid)) * 1000000)::bigint END;
});
	my ($n, $ts) = split /\|/, $out;
	return ($n, ($ts // '') eq '' ? undef : $ts);
}

=pod

=head1 DELETE RACING UPDATE

The race of test/t/220_delete_update.pl and 221_delete_update_3nodes.pl,
on table dt (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT
0) holding rows 1..6, between nodes n1 and n2 ($node: { n1 => .., n2 =>
.. }), last_update_wins.  $change is { id => { delete|update => { node,
ts, v, n } } }; $outcome is { id => 'delete' | 'update' }, the winner of
each raced row.

delete_update_setup($nodes): setup_mesh($nodes, <pg_visibility and dt>,
['dt']), rows 1, 3, 5 written on $nodes->[0] (n1) and 2, 4, 6 on
$nodes->[1] (n2), wait_for_apply_all($nodes, label => 'initial rows'),
checksums_match($nodes, ['dt'], 'initial rows').

delete_update_race($node): while partitioned, one transaction each, in
this order: n2 updates 1, n1 deletes 2, n1 updates 3, n2 deletes 4, n1
deletes 1, n2 updates 2, n2 deletes 3, n1 updates 4, n1 updates 5, n2
deletes 6; each asserted to touch one row ("race: <node> <kind>s row
<id>"), its commit timestamp (microseconds since the epoch) read on the
writer; then the intended orders are asserted (rows 1, 3: the DELETE
committed after the UPDATE; rows 2, 4: the other way round).  Returns
$change.

delete_update_converged($nodes, $change): the expected rows (the later
change wins; equal timestamps: the change of the node with the higher
name), is() on every node and checksums_match($nodes, ['dt'], 'healed').
Returns $outcome.

delete_update_history($node, $nn, $change, $outcome): is() of node $nn's
history: update_deleted for the raced rows it deleted,
delete_origin_differs for the ones it updated, resolved for the later
change.

delete_update_history_rows($node): "id|conflict_type|resolver|resolution|
remote_origin|remote commit ts (us)|resolved v" of $node's history, in
key order (what delete_update_history compares).

delete_update_local_versions($node, $nn, $change, $outcome): is() of node
$nn's delete_origin_differs rows naming its own (frozen) local version.

delete_update_causal_writes($nodes): causal writes after the race on
$nodes->[0] (n1) and $nodes->[1] (n2) (re-insert of deleted keys, update
of a resurrected row, delete), wait_for_apply_all, then on every node:
the rows, and no new conflict_history row.

=cut

sub delete_update_setup
{
	my ($nodes) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	setup_mesh($nodes, q{
	CREATE EXTENSION pg_visibility;
	CREATE TABLE dt (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
}, ['dt']);

	# The rows before the race: written on both nodes (so that the version a
	# node deletes or updates comes from either node).
	my ($n1, $n2) = @$nodes;
	$n1->safe_psql('postgres', q{INSERT INTO dt VALUES (1, 'n1 ins', 0), (3, 'n1 ins', 0), (5, 'n1 ins', 0)});
	$n2->safe_psql('postgres', q{INSERT INTO dt VALUES (2, 'n2 ins', 0), (4, 'n2 ins', 0), (6, 'n2 ins', 0)});
	wait_for_apply_all($nodes, label => 'initial rows');
	checksums_match($nodes, ['dt'], 'initial rows');
	return;
}

sub delete_update_race
{
	my ($node) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my %change;

	# One transaction per change; its commit timestamp read on the writer.
	my $write_change = sub {
		my ($nn, $kind, $id) = @_;
		my $n = $node->{$nn};
		my ($v, $cnt) = ("$nn upd $id", 0);
		my $sql = $kind eq 'delete'
		  ? "WITH c AS (DELETE FROM dt WHERE id = $id RETURNING 1) SELECT count(*), pg_current_xact_id() FROM c"
		  : "WITH c AS (UPDATE dt SET v = '$v', n = n + 1 WHERE id = $id RETURNING 1)
		     SELECT count(*), pg_current_xact_id() FROM c";
		my ($rows, $xid) = split /\|/, $n->safe_psql('postgres', $sql);
		is($rows, '1', "race: $nn ${kind}s row $id");
		my $ts = $n->safe_psql('postgres',
			"SELECT (extract(epoch FROM pg_xact_commit_timestamp('$xid'::xid)) * 1000000)::bigint");
		$change{$id}{$kind} = { node => $nn, ts => $ts, v => $v, n => 1 };
		return;
	};

	$write_change->('n2', 'update', 1);
	$write_change->('n1', 'delete', 2);
	$write_change->('n1', 'update', 3);
	$write_change->('n2', 'delete', 4);
	$write_change->('n1', 'delete', 1);
	$write_change->('n2', 'update', 2);
	$write_change->('n2', 'delete', 3);
	$write_change->('n1', 'update', 4);
	$write_change->('n1', 'update', 5);
	$write_change->('n2', 'delete', 6);

	# The intended orders hold (sanity of the setup, not of concord).
	foreach my $id (1, 3)
	{
		cmp_ok($change{$id}{delete}{ts}, '>', $change{$id}{update}{ts},
			"race: row $id: the DELETE committed after the UPDATE");
	}
	foreach my $id (2, 4)
	{
		cmp_ok($change{$id}{update}{ts}, '>', $change{$id}{delete}{ts},
			"race: row $id: the UPDATE committed after the DELETE");
	}
	return \%change;
}

sub delete_update_converged
{
	my ($nodes, $change) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;

	# The expected rows: the later change wins; equal timestamps: the change
	# of the node with the higher name.
	my @expected;
	my %outcome;    # id => 'delete' | 'update' (the winner of a race)
	foreach my $id (1 .. 6)
	{
		my $d = $change->{$id}{delete};
		my $u = $change->{$id}{update};
		my $winner;
		if ($d && $u)
		{
			$winner =
			    $d->{ts} > $u->{ts} ? 'delete'
			  : $u->{ts} > $d->{ts} ? 'update'
			  : ($d->{node} gt $u->{node} ? 'delete' : 'update');
			$outcome{$id} = $winner;
		}
		else
		{
			$winner = $d ? 'delete' : 'update';
		}
		push @expected, "$id|$u->{v}|$u->{n}" if $winner eq 'update';
	}
	my $expected = join("\n", @expected);
	note("expected rows after healing:\n$expected");

	foreach my $n (@$nodes)
	{
		is($n->safe_psql('postgres', 'SELECT id, v, n FROM dt ORDER BY id'),
			$expected,
			$n->name . ': DELETE racing UPDATE converged to the later change (rows 1, 3 gone; 2, 4 updated)');
	}
	checksums_match($nodes, ['dt'], 'healed');
	return \%outcome;
}

sub delete_update_history_rows
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT key->>'id', conflict_type, resolver, resolution, remote_origin,
		       (extract(epoch FROM remote_commit_ts) * 1000000)::bigint,
		       coalesce(resolved_row->>'v', '')
		  FROM concord.conflict_history ORDER BY (key->>'id')::int, conflict_id});
}

sub delete_update_history
{
	my ($node, $nn, $change, $outcome) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @want;
	foreach my $id (sort { $a <=> $b } keys %$outcome)
	{
		my $d = $change->{$id}{delete};
		my $u = $change->{$id}{update};
		my $win = $outcome->{$id};
		if ($d->{node} eq $nn)
		{
			# the remote UPDATE of a row deleted here
			push @want, join('|', $id, 'update_deleted', 'last_update_wins',
				$win eq 'update' ? 'apply_remote' : 'keep_local',
				$u->{node}, $u->{ts},
				$win eq 'update' ? $u->{v} : '');
		}
		else
		{
			# the remote DELETE of a row written here concurrently
			push @want, join('|', $id, 'delete_origin_differs', 'last_update_wins',
				$win eq 'delete' ? 'apply_remote' : 'keep_local',
				$d->{node}, $d->{ts},
				$win eq 'update' ? $u->{v} : '');
		}
	}
	is( delete_update_history_rows($node),
		join("\n", @want),
		"history: $nn records update_deleted for the rows it deleted, delete_origin_differs for the rows it updated, resolved for the later change"
	) or diag(conflict_history_of($node, commit_ts => 1));
	return;
}

sub delete_update_local_versions
{
	my ($node, $nn, $change, $outcome) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @want;
	foreach my $id (sort { $a <=> $b } keys %$outcome)
	{
		my $u = $change->{$id}{update};
		push @want, "$id|$nn|$u->{ts}|$u->{v}" if $u->{node} eq $nn;
	}
	is( $node->safe_psql('postgres', q{
			SELECT key->>'id', local_origin,
			       (extract(epoch FROM local_commit_ts) * 1000000)::bigint, local_row->>'v'
			  FROM concord.conflict_history WHERE conflict_type = 'delete_origin_differs'
			 ORDER BY (key->>'id')::int, conflict_id}),
		join("\n", @want),
		"history: ${nn}'s delete_origin_differs rows name its frozen local version (origin, commit timestamp, row)"
	) or diag(conflict_history_of($node, commit_ts => 1));
	return;
}

sub delete_update_causal_writes
{
	my ($nodes) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($n1, $n2) = @$nodes;
	my %before = map { $_->name => $_->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history') } @$nodes;
	$n2->safe_psql('postgres', q{INSERT INTO dt VALUES (1, 'n2 re-insert', 0)});
	$n1->safe_psql('postgres', q{UPDATE dt SET v = 'n1 after race', n = n + 1 WHERE id = 2});
	$n1->safe_psql('postgres', q{DELETE FROM dt WHERE id = 4});
	$n2->safe_psql('postgres', q{INSERT INTO dt VALUES (3, 'n2 re-insert', 0)});
	wait_for_apply_all($nodes, label => 'causal writes after the race');
	foreach my $n (@$nodes)
	{
		is($n->safe_psql('postgres', 'SELECT id, v FROM dt ORDER BY id'),
			"1|n2 re-insert\n2|n1 after race\n3|n2 re-insert\n5|n1 upd 5",
			$n->name . ': causal writes after the race applied');
		is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
			$before{ $n->name },
			$n->name . ': causal writes after the race (re-insert over a tombstone, update, delete) are no conflict')
		  or diag(conflict_history_of($n, commit_ts => 1));
	}
	return;
}

=pod

=head1 CHECKS

checksum($node, $table, $order) is "<count>:<md5 of the rows in key order>".

=cut

sub checksum
{
	my ($node, $table, $order) = @_;
	$order //= 'id';
	return $node->safe_psql('postgres',
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY $order)), '-')
		   FROM $table t");
}

sub count_of
{
	my ($node, $table, $where) = @_;
	$where = defined $where ? "WHERE $where" : '';
	return $node->safe_psql('postgres', "SELECT count(*) FROM $table $where");
}

# is() every node's checksum of each table against the first node's.
# $tables: arrayref of table names, or of [table, order-by] pairs.
# Returns { table => reference checksum }.
sub checksums_match
{
	my ($nodes, $tables, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my %ref;
	foreach my $t (@$tables)
	{
		my ($table, $order) = ref $t ? @$t : ($t, 'id');
		my $first = checksum($nodes->[0], $table, $order);
		$ref{$table} = $first;
		foreach my $n (@$nodes[ 1 .. $#$nodes ])
		{
			is(checksum($n, $table, $order), $first,
				($label // 'converged') . ": $table on "
				  . $n->name . ' equals ' . $nodes->[0]->name);
		}
	}
	return \%ref;
}

# Every concord slot on every provider confirms (confirmed_flush_lsn) the
# provider's current WAL position (poll).
sub slots_caught_up
{
	my ($nodes, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my %want;
	foreach my $n (@$nodes)
	{
		$want{ $_->{provider}->name }++ foreach subscriptions_of($n);
	}
	my $all = 1;
	foreach my $p (@$nodes)
	{
		my $count = $want{ $p->name } or next;
		my $lsn = $p->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
		my $ok = $p->poll_query_until('postgres',
			"SELECT count(*) = $count AND bool_and(confirmed_flush_lsn >= '$lsn')
			   FROM pg_replication_slots
			  WHERE plugin = 'concord' AND NOT temporary");
		ok($ok, ($label // 'slots') . ': ' . $p->name
			  . "'s $count concord slot(s) confirmed its WAL position $lsn")
		  or diag($p->safe_psql('postgres',
				'SELECT slot_name, plugin, temporary, active, confirmed_flush_lsn,
				        pg_current_wal_lsn() FROM pg_replication_slots'));
		$all &&= $ok;
	}
	return $all;
}

# Loop freedom: with every node caught up, no node writes a data change for
# $seconds seconds (no Heap/Heap2 data record, no transaction record), and
# the tables keep their contents.  Only the nodes' own maintenance records
# (page pruning, visibility map, running-xacts snapshots, checkpoints) may
# appear in the window.
sub check_loop_free
{
	my ($nodes, $tables, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $seconds = $opts{seconds} // 5;
	my $label   = $opts{label} // 'loop freedom';

	my (%before, %lsn);
	foreach my $n (@$nodes)
	{
		$before{ $n->name } =
		  [ map { checksum($n, ref $_ ? @$_ : ($_)) } @$tables ];
	}
	$lsn{ $_->name } =
	  $_->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()')
	  foreach @$nodes;

	# The only timed observation of the suite: nothing may happen here.
	Time::HiRes::sleep($seconds);

	foreach my $n (@$nodes)
	{
		my $start = $lsn{ $n->name };
		my $end = $n->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
		my ($writes, $detail) = (0, '');
		if ($end ne $start)
		{
			# pg_walinspect reads flushed WAL only.
			$n->poll_query_until('postgres',
				"SELECT pg_current_wal_flush_lsn() >= '$end'")
			  or diag($n->name . ': WAL not flushed up to ' . $end);
			$detail = $n->safe_psql('postgres',
				"SELECT resource_manager || '/' || record_type || ' x' || count(*)
				   FROM pg_get_wal_records_info('$start', '$end')
				  GROUP BY resource_manager, record_type ORDER BY 1");
			$writes = $n->safe_psql('postgres',
				"SELECT count(*) FROM pg_get_wal_records_info('$start', '$end')
				  WHERE (resource_manager IN ('Heap', 'Heap2')
				         AND record_type !~ '^(PRUNE|VACUUM|FREEZE_PAGE|VISIBLE)')
				     OR resource_manager = 'Transaction'");
		}
		is($writes, '0',
			"$label: " . $n->name . " wrote no data change nor transaction in ${seconds}s")
		  or diag($n->name . " WAL $start .. $end:\n$detail\n"
			  . $n->safe_psql('postgres',
				"SELECT string_agg(xid || ' ' || resource_manager || '/' || record_type
				                   || ' ' || description, E'\\n')
				   FROM pg_get_wal_records_info('$start', '$end')
				  WHERE resource_manager IN ('Heap', 'Heap2', 'Transaction')"));
		note($n->name . ": WAL records in the window: " . ($detail || 'none'));

		my @after = map { checksum($n, ref $_ ? @$_ : ($_)) } @$tables;
		is_deeply(\@after, $before{ $n->name },
			"$label: " . $n->name . ' tables unchanged after the window');
	}
	return;
}

=pod

=head1 BACKGROUND SQL

start_psql($node, $sql) / start_psql_file($node, $sql) run $sql (written to
a file) with psql in the background (ON_ERROR_STOP).
finish_psql($h) waits for it and returns (exit status, stdout, stderr).

=cut

sub _start
{
	my ($node, $stdin, @args) = @_;
	my $h = { stdin => $stdin, stdout => '', stderr => '', node => $node->name };
	my @cmd = ($node->installed_command('psql'), '-X', '-q', '-A', '-t',
		'-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), @args);
	$h->{run} = IPC::Run::start(\@cmd, '<', \$h->{stdin}, '>', \$h->{stdout},
		'2>', \$h->{stderr});
	return $h;
}

# (IPC::Run feeds a scalar to stdin only while pumped: scripts go through
# files.)
sub start_psql
{
	my ($node, $sql) = @_;
	return start_psql_file($node, $sql);
}

my $file_seq = 0;

sub start_psql_file
{
	my ($node, $sql) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . '/script_' . ++$file_seq . '.sql';
	open my $fh, '>', $file or die "cannot write $file: $!";
	print $fh $sql;
	close $fh;
	my $h = _start($node, '', '-f', $file);
	$h->{file} = $file;
	return $h;
}

sub finish_psql
{
	my ($h) = @_;
	$h->{run}->finish;
	return ($h->{run}->result(0), $h->{stdout}, $h->{stderr});
}

=pod

=head1 RANDOM WORKLOAD WITH A MODEL

random_workload(%opts) returns (sql, model): a deterministic script of
transactions (inserts, updates, deletes, multi-row statements, rolled
back transactions and subtransactions) on keys [lo, hi) of each table, and
the model of what the committed result must be:
  model->{$table}{$id} = v.
Options: rand (a code ref returning [0,1)), tables (arrayref), lo, hi,
origin (text written in the origin column), transactions.
Tables must have the shape (id <int> PRIMARY KEY, origin text, v int,
note text).

=cut

sub random_workload
{
	my (%o) = @_;
	my $rand = $o{rand};
	my ($lo, $hi) = ($o{lo}, $o{hi});
	my $origin = $o{origin};
	my @tables = @{ $o{tables} };
	my %model = map { $_ => {} } @tables;
	my %next  = map { $_ => $lo } @tables;    # next never-used key
	my $sql = '';
	my $pick = sub { my ($n) = @_; return int($rand->() * $n); };

	# One statement on a working copy $m of a table's model.
	my $statement = sub {
		my ($t, $m, $txn) = @_;
		my @keys = sort { $a <=> $b } keys %$m;
		my $r = $rand->();
		if ($r < 0.35 || @keys < 5)
		{
			my $n = 1 + $pick->($r < 0.05 ? 50 : 3);
			return '' if $next{$t} + $n > $hi;
			my $from = $next{$t};
			$next{$t} += $n;
			my $to = $from + $n - 1;
			$m->{$_} = $_ % 97 foreach $from .. $to;
			return "INSERT INTO $t SELECT g, '$origin', g % 97, 'ins$txn' "
			  . "FROM generate_series($from, $to) g;\n";
		}
		my $k = $keys[ $pick->(scalar @keys) ];
		if ($r < 0.65)
		{
			my $d = 1 + $pick->(9);
			$m->{$k} += $d;
			return "UPDATE $t SET v = v + $d, note = 'upd$txn' WHERE id = $k;\n";
		}
		if ($r < 0.75)
		{
			# a range: every existing key in [k, k+20)
			my $e = $k + 20 < $hi ? $k + 20 : $hi;
			foreach (@keys) { $m->{$_} += 1 if $_ >= $k && $_ < $e; }
			return "UPDATE $t SET v = v + 1, note = 'rng$txn' WHERE id >= $k AND id < $e;\n";
		}
		if ($r < 0.80)
		{
			# key change: move a row to a fresh key
			return '' if $next{$t} >= $hi;
			my $nk = $next{$t}++;
			$m->{$nk} = delete $m->{$k};
			return "UPDATE $t SET id = $nk, note = 'mov$txn' WHERE id = $k;\n";
		}
		if ($r < 0.95)
		{
			delete $m->{$k};
			return "DELETE FROM $t WHERE id = $k;\n";
		}
		my $e = $k + 5 < $hi ? $k + 5 : $hi;
		foreach (@keys) { delete $m->{$_} if $_ >= $k && $_ < $e; }
		return "DELETE FROM $t WHERE id >= $k AND id < $e;\n";
	};

	foreach my $txn (1 .. $o{transactions})
	{
		my %work = map { $_ => { %{ $model{$_} } } } @tables;
		my $body = '';
		foreach (1 .. 1 + $pick->(4))
		{
			my $t = $tables[ $pick->(scalar @tables) ];
			if ($rand->() < 0.08)
			{
				# a subtransaction rolled back: its change must not ship
				my %scratch = %{ $work{$t} };
				my %save_next = %next;
				$body .= "SAVEPOINT s;\n" . $statement->($t, \%scratch, $txn)
				  . "ROLLBACK TO SAVEPOINT s;\n";
				%next = %save_next;
			}
			else
			{
				$body .= $statement->($t, $work{$t}, $txn);
			}
		}
		if ($rand->() < 0.05)
		{
			# rolled back: nothing of it exists anywhere (keys stay used,
			# harmlessly)
			$sql .= "BEGIN;\n$body" . "ROLLBACK;\n";
		}
		else
		{
			$sql .= "BEGIN;\n$body" . "COMMIT;\n";
			%model = %work;
		}
	}
	return ($sql, \%model);
}

# Exact expectations from models: for each table, is() count(*) and
# sum(v) of the rows with origin = <origin>, on every node.
# $models: { origin => model }.
sub apply_model_expectations
{
	my ($nodes, $models, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	foreach my $origin (sort keys %$models)
	{
		my $model = $models->{$origin};
		foreach my $t (sort keys %$model)
		{
			my $rows = $model->{$t};
			my $count = scalar keys %$rows;
			my $sum = 0;
			$sum += $_ foreach values %$rows;
			foreach my $n (@$nodes)
			{
				is( $n->safe_psql('postgres',
						"SELECT count(*) || '/' || coalesce(sum(v), 0)
						   || '/' || count(DISTINCT id)
						   FROM $t WHERE origin = '$origin'"),
					"$count/$sum/$count",
					($label // 'model') . ": " . $n->name
					  . " holds exactly ${origin}'s committed rows of $t (count/sum/distinct)");
			}
		}
	}
	return;
}

1;
