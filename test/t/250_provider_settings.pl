# Values travel as text: a provider configured with another DateStyle,
# IntervalStyle, TimeZone and extra_float_digits must not change what the
# subscriber stores (day/month order, intervals, floats), in the initial
# copy and in the stream.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);

# n1 outputs dates day first, intervals in SQL style, floats short.
$n1->append_conf('postgresql.conf', q{
datestyle = 'SQL, DMY'
intervalstyle = 'sql_standard'
timezone = 'Asia/Tokyo'
extra_float_digits = 0
});
$n1->restart;

run_on_all(\@nodes, q{
	CREATE TABLE settings_t (id int PRIMARY KEY, d date, ts timestamp,
	                         tz timestamptz, iv interval, f float8);
});
$n1->safe_psql('postgres', q{
	INSERT INTO settings_t VALUES
	  (1, '2020-02-01', '2020-02-01 03:04:05.678', '2020-02-01 03:04:05+00',
	   '1 year 2 mons 3 days 04:05:06', 0.1 + 0.2)});
add_tables(\@nodes, ['settings_t']);
subscribe($n2, $n1);
wait_replicating(\@nodes, 'subscribed');
wait_sync_complete(\@nodes);

$n1->safe_psql('postgres', q{
	INSERT INTO settings_t VALUES
	  (2, '2021-03-04', '2021-03-04 05:06:07', '2021-03-04 05:06:07+00',
	   '-1 days +02:00:00', 1e-7 + 1)});
wait_for_apply_all(\@nodes, label => 'streamed row');

# Compare in a fixed, unambiguous form on both sides.
my $q = q{SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres';
	SET timezone = 'UTC'; SET extra_float_digits = 3;
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s', id, d, ts, tz, iv, f), ';' ORDER BY id)
	  FROM settings_t};
my $on_n1 = $n1->safe_psql('postgres', $q);
my $on_n2 = $n2->safe_psql('postgres', $q);
is($on_n2, $on_n1, 'copied and streamed values are identical on both nodes');
like($on_n2, qr/^1\|2020-02-01\|/, 'the copied date keeps its day and month');
like($on_n2, qr/;2\|2021-03-04\|/, 'the streamed date keeps its day and month');

done_testing();
