# A subscriber killed (pg_ctl stop -m immediate) and restarted 10 times
# while its provider is under continuous load: small transactions
# inserting numbered rows (ids 1, 2, 3, ... without gaps) and updating
# earlier rows by +1 (an update applied twice, or lost, changes the sum).
# Apply commits asynchronously, so each kill also loses the subscriber's
# last applied transactions: they must be fetched again, never twice.
# Pass criteria, after the load stops and the subscriber caught up:
#   - provider: count(*) = max(id), no duplicates;
#   - subscriber: the same count, count(*) = count(DISTINCT id), the same
#     sum(v) and the same checksum.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $batch       = 100;     # rows per transaction
my $max_batches = 3000;    # bound: at most 300,000 rows
my $lock        = 4211;    # advisory lock: the load runs while we hold it

my ($prov, $sub) = concord_nodes(2, autovacuum => 1);

run_on_all([ $prov, $sub ], q{
	CREATE TABLE crash_t (id int PRIMARY KEY, v int NOT NULL, batch int NOT NULL,
	                      filler text);
});
add_tables([$prov], ['crash_t']);
my $subname = subscribe($sub, $prov);
wait_replicating([ $prov, $sub ], 'subscribed');
wait_sync_complete([$sub]);

# The load: batch i inserts ids i*B+1 .. (i+1)*B and increments v of batch
# i-5, one transaction per batch; it stops when the advisory lock is free
# (or at the bound).
$prov->safe_psql('postgres', qq{
	CREATE PROCEDURE crash_load() LANGUAGE plpgsql AS \$\$
	DECLARE
		i int := 0;
	BEGIN
		WHILE i < $max_batches AND NOT pg_try_advisory_lock($lock) LOOP
			INSERT INTO crash_t
				SELECT g, 0, i, repeat(md5(g::text), 3)
				  FROM generate_series(i * $batch + 1, (i + 1) * $batch) g;
			UPDATE crash_t SET v = v + 1 WHERE batch = i - 5;
			COMMIT;
			PERFORM pg_sleep(0.002);
			i := i + 1;
		END LOOP;
	END \$\$;
});

my $holder = $prov->background_psql('postgres');
$holder->query_safe("SELECT pg_advisory_lock($lock)");
my $load = start_psql($prov, "CALL crash_load();\n");

my $applied = 0;
foreach my $round (1 .. 10)
{
	# Kill only once the subscriber applied more than before: the apply is
	# running, in the middle of the stream.
	my $progress = $sub->poll_query_until('postgres',
		"SELECT count(*) > $applied FROM crash_t");
	if (!ok($progress, "round $round: the subscriber applies (beyond $applied rows)"))
	{
		diag(status_report([ $prov, $sub ]));
		last;
	}
	$applied = $sub->safe_psql('postgres', 'SELECT count(*) FROM crash_t');
	note("round $round: subscriber has $applied rows, provider "
		  . $prov->safe_psql('postgres', 'SELECT count(*) FROM crash_t'));
	$sub->stop('immediate');
	$sub->start;
}

my $still_loading = $prov->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity
	   WHERE state = 'active' AND query LIKE 'CALL crash_load%'});
diag("the load was still running after the 10th restart: "
	  . ($still_loading ? 'yes' : 'NO (raise max_batches)'));
$holder->query_safe("SELECT pg_advisory_unlock($lock)");
$holder->quit;
my ($rc, undef, $stderr) = finish_psql($load);
is($rc, 0, 'the load finished without error') or diag($stderr);

my ($count, $max) = split /\|/,
  $prov->safe_psql('postgres', 'SELECT count(*), max(id) FROM crash_t');
is($count, $max, "provider: $count rows numbered 1 .. $max without gaps");
cmp_ok($count, '>', 10 * $batch, 'provider: the load wrote more than 10 batches');

wait_replicating([$sub], 'after the restarts');
ok(wait_for_apply_one($sub, $subname, $prov), 'the subscriber caught up (wait_for_apply)')
  or diag(status_report([$sub]));

my $summary = 'SELECT count(*) || \'/\' || count(DISTINCT id) || \'/\' || sum(v) FROM crash_t';
my $expect  = $prov->safe_psql('postgres', $summary);
is($sub->safe_psql('postgres', $summary), $expect,
	"subscriber: exact count, no duplicates, same sum (count/distinct/sum = $expect)");
checksums_match([ $prov, $sub ], ['crash_t'], 'after 10 immediate restarts');

is( $sub->safe_psql('postgres',
		"SELECT status FROM concord.subscription_status
		  WHERE subscription_name = '$subname'"),
	'replicating', 'the subscription is replicating at the end');

$_->stop foreach ($prov, $sub);
done_testing();
