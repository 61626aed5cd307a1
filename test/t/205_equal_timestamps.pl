# Equal commit timestamps: two nodes whose clocks are frozen at the same
# instant, a few seconds ahead (libfaketime, a timestamp file both read;
# the real clock passes that instant before they meet) write the same keys
# while apart, so that both versions of each key carry exactly the same
# commit timestamp.  The tie goes to the higher node name (n2) under
# last_update_wins, first_update_wins and replica_priority (equal
# priorities fall back to last_update_wins), the same way on both nodes.
# Pass criteria: the commit timestamps of the two versions are equal
# (read on each node), both nodes hold n2's version of every key, and each
# node's history shows the tie decided the same way (n1: apply_remote,
# n2: keep_local).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($libfaketime) = glob('/usr/lib/*/faketime/libfaketime.so.1');
die "libfaketime not found (Debian package faketime; scripts/install-deps.sh installs it)\n"
  unless defined $libfaketime && -f $libfaketime;
diag('205_equal_timestamps: deterministic (no random seed)');

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);
my $clock_file = PostgreSQL::Test::Utils::tempdir() . '/faketime';

sub set_clock
{
	my ($spec) = @_;
	open(my $fh, '>', "$clock_file.new") or die "cannot write $clock_file.new: $!";
	print $fh "$spec\n";
	close($fh);
	rename("$clock_file.new", $clock_file) or die "cannot rename to $clock_file: $!";
	return;
}

# Both nodes read their clock from the file (re-read at most every second);
# monotonic time, used for waits, stays real.
set_clock('+0');
foreach my $n (@nodes)
{
	$n->stop;
	local $ENV{LD_PRELOAD}                    = $libfaketime;
	local $ENV{FAKETIME_TIMESTAMP_FILE}       = $clock_file;
	local $ENV{FAKETIME_CACHE_DURATION}       = '1';
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC}  = '1';
	$n->start;
}

my %resolver = (tie_lww => 'last_update_wins', tie_fuw => 'first_update_wins',
	tie_prio => 'replica_priority');
my @tables = sort keys %resolver;
setup_mesh(\@nodes,
	join('', map { "CREATE TABLE $_ (id int PRIMARY KEY, v text NOT NULL);\n" } @tables)
	  . join('', map { "SELECT concord.set_conflict_resolver('$_', '$resolver{$_}');\n" } @tables),
	\@tables);
$n1->safe_psql('postgres', "INSERT INTO $_ VALUES (2, 'initial')") foreach @tables;
wait_for_apply_all(\@nodes, label => 'initial rows');

partition_nodes(\@nodes, 'apart');
# A few seconds ahead: the versions must be newer than what each node had
# applied of the other (or they would not be concurrent), and the real
# clock passes the instant again before the nodes meet (no clock skew).
my @t = gmtime(time() + 3);
my $frozen = sprintf('%04d-%02d-%02d %02d:%02d:%02d',
	$t[5] + 1900, $t[4] + 1, $t[3], $t[2], $t[1], $t[0]);
set_clock($frozen);
foreach my $n (@nodes)
{
	ok($n->poll_query_until('postgres',
			"SELECT clock_timestamp() = '$frozen+00'::timestamptz"),
		$n->name . "'s clock is frozen at $frozen");
}
foreach my $n (@nodes)
{
	my $nn = $n->name;
	$n->safe_psql('postgres', join('',
		map { "INSERT INTO $_ VALUES (1, '$nn'); UPDATE $_ SET v = '$nn' WHERE id = 2;\n" } @tables));
}
foreach my $t (@tables)
{
	foreach my $k (1, 2)
	{
		my @ts = map {
			$_->safe_psql('postgres', "SELECT pg_xact_commit_timestamp(xmin) FROM $t WHERE id = $k")
		} @nodes;
		is($ts[0], $ts[1], "$t key $k: both versions committed at the same instant ($ts[0])");
	}
}
set_clock('+0');
foreach my $n (@nodes)
{
	ok($n->poll_query_until('postgres',
			"SELECT clock_timestamp() > '$frozen+00'::timestamptz + interval '1 s'"),
		$n->name . "'s clock runs again, past the frozen instant");
}
heal_nodes(\@nodes, 'together');

foreach my $t (@tables)
{
	foreach my $n (@nodes)
	{
		is($n->safe_psql('postgres', "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM $t"),
			'1:n2,2:n2', "$t: the higher node name wins the tie on " . $n->name);
	}
	is($n1->safe_psql('postgres',
			"SELECT string_agg(conflict_type || ' ' || resolution, ',' ORDER BY key->>'id')"
			  . " FROM concord.conflict_history WHERE relation = 'public.$t'"),
		'insert_exists apply_remote,update_origin_differs apply_remote',
		"$t: n1 applied n2's versions");
	is($n2->safe_psql('postgres',
			"SELECT string_agg(conflict_type || ' ' || resolution, ',' ORDER BY key->>'id')"
			  . " FROM concord.conflict_history WHERE relation = 'public.$t'"),
		'insert_exists keep_local,update_origin_differs keep_local',
		"$t: n2 kept its versions");
}
checksums_match(\@nodes, \@tables, 'converged');

done_testing();
