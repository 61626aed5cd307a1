# Initial synchronisation under concurrent writes, and resynchronisation.
#
# The provider holds 50,000 + 10,000 rows and runs a random churn (inserts,
# updates, range updates, deletes; one transaction per step) before, while
# and after a new subscriber is created with synchronize_data = true.  The
# churn only stops (an advisory lock is released) once the copy is
# complete and several hundred more steps have been streamed.  Then:
#   - the subscriber's checksums equal the provider's (no gap, no overlap).
# Then the subscriber's copy of one table is tampered with locally
# (session_replication_role = replica) and
# alter_subscription_resynchronize_table recopies it, again under churn:
#   - the checksums are equal again, and the other table was left alone.
# Last, a third subscriber is killed (-m immediate) during its initial copy
# (under churn): after its restart the copy completes and its checksums
# equal the provider's.
# The churn is random: the seed is printed; CONCORD_SEED=<n> replays it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = $ENV{CONCORD_SEED} // int(rand(1 << 30));
diag("130_initial_sync: random seed $seed (CONCORD_SEED=$seed replays it)");
my $pg_seed = sprintf('%.6f', ($seed % 1_000_000) / 1_000_000);    # setseed()

my $lock = 4213;
my ($prov, $sub) = concord_nodes(2);
my @both   = ($prov, $sub);
my @tables = qw(s1 s2);

run_on_all(\@both, q{
	CREATE TABLE s1 (id int PRIMARY KEY, v int NOT NULL, t text);
	CREATE TABLE s2 (id int PRIMARY KEY, grp int NOT NULL, t text);
});
$prov->safe_psql('postgres', qq{
	INSERT INTO s1 SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 50000) g;
	INSERT INTO s2 SELECT g, g % 10, md5(g::text) FROM generate_series(1, 10000) g;
	CREATE SEQUENCE churn_steps;
	-- One random change per transaction until the advisory lock is free.
	CREATE PROCEDURE churn(seed float8, first_id int, max_steps int)
	LANGUAGE plpgsql AS \$\$
	DECLARE
		i int := 0;
		next_id int := first_id;
		k int;
		r float8;
	BEGIN
		PERFORM setseed(seed);
		WHILE i < max_steps AND NOT pg_try_advisory_lock($lock) LOOP
			i := i + 1;
			r := random();
			k := 1 + floor(random() * (next_id - 1))::int;
			IF r < 0.35 THEN
				INSERT INTO s1 VALUES (next_id, i, md5(i::text));
				next_id := next_id + 1;
			ELSIF r < 0.65 THEN
				UPDATE s1 SET v = v + 1, t = md5(t) WHERE id = k;
			ELSIF r < 0.80 THEN
				DELETE FROM s1 WHERE id = k;
			ELSIF r < 0.90 THEN
				UPDATE s1 SET v = v - 1 WHERE id BETWEEN k AND k + 20;
			ELSE
				UPDATE s2 SET grp = grp + 1 WHERE id = 1 + k % 10000;
				DELETE FROM s2 WHERE id = 1 + (k * 7) % 10000;
				INSERT INTO s2 VALUES (first_id + 100000 + i, 0, 'new')
					ON CONFLICT (id) DO UPDATE SET grp = s2.grp + 1;
			END IF;
			PERFORM nextval('churn_steps');
			COMMIT;
		END LOOP;
		PERFORM pg_advisory_unlock($lock);
	END \$\$;
});
add_tables([$prov], \@tables);

my $steps = sub { $prov->safe_psql('postgres', 'SELECT last_value FROM churn_steps') };

# Start a churn (the advisory lock held by $holder), wait until it made
# $min steps.
sub start_churn
{
	my ($holder, $first_id, $seed_value, $min) = @_;
	$holder->query_safe("SELECT pg_advisory_lock($lock)");
	my $start = $steps->();
	my $h = start_psql($prov, "CALL churn($seed_value, $first_id, 100000000);\n");
	ok($prov->poll_query_until('postgres',
			"SELECT last_value >= $start + $min FROM churn_steps"),
		"churn running ($min steps made)");
	return $h;
}

# Let it make $more steps after now, then stop it.
sub stop_churn
{
	my ($holder, $h, $more, $label) = @_;
	my $now = $steps->();
	ok($prov->poll_query_until('postgres',
			"SELECT last_value >= $now + $more FROM churn_steps"),
		"$label: $more more churn steps made after the copy");
	$holder->query_safe("SELECT pg_advisory_unlock($lock)");
	my ($rc, undef, $stderr) = finish_psql($h);
	is($rc, 0, "$label: the churn ended without error") or diag($stderr);
	return;
}

my $holder = $prov->background_psql('postgres');

# --- initial copy under churn ----------------------------------------------
my $churn = start_churn($holder, 50001, $pg_seed, 300);
my $at_create = $steps->();
my $subname = subscribe($sub, $prov, synchronize_data => 1);
$sub->safe_psql('postgres',
	"SELECT concord.wait_for_subscription_sync_complete('$subname')",
	timeout => $ConcordTest::TIMEOUT);
my $at_synced = $steps->();
note("churn steps: $at_create when subscribing, $at_synced when the copy was complete");
diag('the churn made no step while the copy was being made: the overlap was not exercised')
  unless $at_synced > $at_create;
stop_churn($holder, $churn, 300, 'initial copy');

wait_replicating(\@both, 'after the initial copy');
ok(wait_for_apply_one($sub, $subname, $prov), 'caught up after the initial copy');
checksums_match(\@both, \@tables, 'initial copy under churn');

# --- resynchronize a tampered table, under churn ----------------------------
$sub->safe_psql('postgres', q{
	SET session_replication_role = replica;
	DELETE FROM s1 WHERE id % 5 = 0;
	UPDATE s1 SET v = -1 WHERE id % 5 = 1;
	INSERT INTO s1 VALUES (-1, -1, 'local junk');
});
isnt(ConcordTest::checksum($sub, 's1'), ConcordTest::checksum($prov, 's1'),
	'the tampered copy of s1 differs');

$churn = start_churn($holder, 500001, -$pg_seed, 100);
$sub->safe_psql('postgres',
	"SELECT concord.alter_subscription_resynchronize_table('$subname', 's1')");
$sub->safe_psql('postgres',
	"SELECT concord.wait_for_subscription_sync_complete('$subname')",
	timeout => $ConcordTest::TIMEOUT);
stop_churn($holder, $churn, 200, 'resynchronisation');

wait_replicating(\@both, 'after the resynchronisation');
ok(wait_for_apply_one($sub, $subname, $prov), 'caught up after the resynchronisation');
checksums_match(\@both, \@tables, 'resynchronised under churn');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM s1 WHERE id = -1'), '0',
	'the local junk row is gone');

# --- the subscriber killed during its initial copy ---------------------------
# A third node copies s1, s2 and a bigger table (in its own set, so that
# only n3 copies it) under churn, and is killed (-m immediate) while a sync
# worker runs; after the restart the copy completes with nothing missing
# and nothing twice.
my $n3 = ConcordTest::concord_node('n3');
$n3->safe_psql('postgres', q{
	CREATE TABLE s1 (id int PRIMARY KEY, v int NOT NULL, t text);
	CREATE TABLE s2 (id int PRIMARY KEY, grp int NOT NULL, t text);
	CREATE TABLE sbig (id int PRIMARY KEY, t text);
});
$prov->safe_psql('postgres', q{
	CREATE TABLE sbig (id int PRIMARY KEY, t text);
	INSERT INTO sbig SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g;
	SELECT concord.create_replication_set('bigset');
	SELECT concord.replication_set_add_table('bigset', 'sbig');
});
$churn = start_churn($holder, 50000001, $pg_seed / 2, 100);
my $sub3 = subscribe($n3, $prov, sets => [ 'default', 'bigset' ]);
my $sync_running =
  q{SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'concord sync')};
ok( $n3->poll_query_until('postgres',
		"SELECT ($sync_running) OR EXISTS (SELECT FROM concord.subscription_status
		         WHERE subscription_name = '$sub3' AND status = 'replicating')"),
	'n3: the copy started');
diag('no sync worker seen on n3: the kill did not hit the copy')
  unless $n3->safe_psql('postgres', $sync_running) eq 't';
$n3->stop('immediate');
$n3->start;
$n3->safe_psql('postgres', "SELECT concord.wait_for_subscription_sync_complete('$sub3')",
	timeout => $ConcordTest::TIMEOUT);
stop_churn($holder, $churn, 200, 'copy interrupted by a crash');
wait_replicating([$n3], 'n3 after its crash during the copy');
ok(wait_for_apply_one($n3, $sub3, $prov), 'n3 caught up');
checksums_match([ $prov, $n3 ], [ @tables, 'sbig' ], 'copy interrupted by a crash');

$holder->quit;
$_->stop foreach (@both, $n3);
done_testing();
