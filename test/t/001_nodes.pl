# Three concord nodes: the extension, create_node, the 'default' set and
# the launcher (running, surviving SIGHUP, restarted after SIGTERM); and a
# fourth server without concord preloaded, where CREATE EXTENSION must fail
# with a HINT.
use strict;
use warnings;
use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $regress_conf = slurp_file("$FindBin::RealBin/../regress.conf");
my $one_launcher =
  "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'concord launcher'";
my $launcher_count =
  "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'concord launcher'";
my $launcher_pid =
  "SELECT pid FROM pg_stat_activity WHERE backend_type = 'concord launcher'";

# A node with concord preloaded, configured like test/regress.conf.
sub concord_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', $regress_conf);
	$node->start;
	return $node;
}

# True once no SIGHUP is pending for $pid (Linux: /proc/PID/status), i.e.
# the signal was delivered to its handler.  Elsewhere: true.
sub sighup_delivered
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return 1;
	my $status = do { local $/; <$fh> };
	close $fh;
	foreach my $field (qw(SigPnd ShdPnd))
	{
		my ($mask) = $status =~ /^$field:\s*([0-9a-f]+)$/m;
		return 0 if defined $mask && (hex(substr($mask, -8)) & 1);  # SIGHUP = 1
	}
	return 1;
}

my @nodes = map { concord_node("node$_") } 1 .. 3;

foreach my $i (0 .. $#nodes)
{
	my $node = $nodes[$i];
	my $name = 'node' . ($i + 1);
	my $dsn  = $node->connstr('postgres');
	(my $dsn_sql = $dsn) =~ s/'/''/g;    # as an SQL literal

	# The launcher is a static worker: it runs before CREATE EXTENSION.
	ok($node->poll_query_until('postgres', $one_launcher),
		"$name: one concord launcher is running");

	$node->safe_psql('postgres', 'CREATE EXTENSION concord');
	my $node_id = $node->safe_psql('postgres',
		"SELECT concord.create_node('$name', '$dsn_sql')");
	like($node_id, qr/^\d+$/, "$name: create_node returns an oid");

	is( $node->safe_psql(
			'postgres',
			'SELECT node_id, node_name, dsn, priority, is_local FROM concord.node'),
		"$node_id|$name|$dsn|0|t",
		"$name: concord.node holds the local node");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM concord.replication_set WHERE set_name = 'default'"),
		'1',
		"$name: create_node created the replication set 'default'");
	is( $node->safe_psql(
			'postgres',
			q{SELECT replicate_insert AND replicate_update AND replicate_delete
			         AND replicate_truncate, capture
			    FROM concord.replication_set WHERE set_name = 'default'}),
		't|logical',
		"$name: set 'default' ships every operation by logical decoding");
}

# SIGHUP: the launcher reloads its configuration and keeps running.
foreach my $i (0 .. $#nodes)
{
	my $node = $nodes[$i];
	my $name = 'node' . ($i + 1);
	my $pid  = $node->safe_psql('postgres', $launcher_pid);
	my $loaded = $node->safe_psql('postgres', 'SELECT pg_conf_load_time()');

	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	# A new backend inherits the postmaster's reload time, and the postmaster
	# signals its children before that: once it moves, the launcher has
	# been sent SIGHUP.
	ok( $node->poll_query_until(
			'postgres', "SELECT pg_conf_load_time() > '$loaded'"),
		"$name: configuration reloaded");
	my $delivered = 0;
	foreach (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		last if ($delivered = sighup_delivered($pid));
		$node->safe_psql('postgres', 'SELECT pg_sleep(0.1)');
	}
	ok($delivered, "$name: the launcher received SIGHUP");
	is($node->safe_psql('postgres', $launcher_pid),
		$pid, "$name: the launcher is still running, same pid, after SIGHUP");
	ok(kill(0, $pid), "$name: launcher process $pid is alive");
}

# SIGTERM: the postmaster starts a new launcher (bgw_restart_time).
{
	my $node = $nodes[0];
	my $pid  = $node->safe_psql('postgres', $launcher_pid);
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 AND min(pid) <> $pid FROM pg_stat_activity
			  WHERE backend_type = 'concord launcher'"),
		'node1: a new launcher starts after SIGTERM');
}

# The nodes' catalogs are independent: each knows only itself so far.
foreach my $i (0 .. $#nodes)
{
	is( $nodes[$i]->safe_psql(
			'postgres', 'SELECT string_agg(node_name, \',\') FROM concord.node'),
		'node' . ($i + 1),
		'node' . ($i + 1) . ': knows no peer before subscribing');
}

# A server without concord in shared_preload_libraries refuses the extension.
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
my (undef, undef, $stderr) =
  $plain->psql('postgres', 'CREATE EXTENSION concord', on_error_stop => 0);
# (psql exits 0 with ON_ERROR_STOP off: the error shows on stderr.)
like($stderr, qr/ERROR:[^\n]*concord/,
	'without shared_preload_libraries: CREATE EXTENSION fails with an ERROR naming concord');
like($stderr, qr/^HINT:.*shared_preload_libraries/m,
	'the HINT mentions shared_preload_libraries');
is($plain->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'concord'"),
	'0', 'no extension was left behind');
is($plain->safe_psql('postgres', $launcher_count),
	'0', 'no launcher runs without shared_preload_libraries');

$_->stop foreach (@nodes, $plain);
done_testing();
