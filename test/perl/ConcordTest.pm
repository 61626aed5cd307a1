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
dsn_suffix (appended to the dsn).

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
		     forward_origins := ${forward}::text[]);");
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
