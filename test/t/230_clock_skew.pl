# concord.max_clock_skew: a provider whose clock runs ahead.
#
# Two nodes in a mesh: n1, the provider, runs under libfaketime with its
# clock 8 s ahead (LD_PRELOAD + FAKETIME="+8s" in the environment of its
# postmaster, hence of every backend, walsender and worker); n2, the
# subscriber, runs on the real clock.  Apply must not commit a remote
# transaction before the local clock has passed its commit timestamp, so
# that later local writes carry later timestamps than what was applied.
#
#   1. n2 has concord.max_clock_skew = '2s' (ALTER SYSTEM + reload).  An
#      INSERT on n1 is 8 s ahead: while n2 waits, sub_n2_n1 is 'down' with
#      a last_error naming max_clock_skew (2000 ms) and the origin n1, the
#      row is not there yet, and the skew is logged once as a WARNING;
#      when the row is first seen on n2, its commit timestamp (the
#      origin's, preserved by apply) is <= n2's now() and clock; then the
#      subscription is 'replicating' again, with no last_error, and the
#      nodes converge.
#   2. max_clock_skew = '20s': the same 8 s skew is within the setting:
#      apply still holds the row back until n2's clock has passed its
#      commit timestamp, but the subscription stays 'replicating' with no
#      last_error all along, and nothing is logged.
#   3. The other direction (n2 -> n1, 8 s behind n1's clock) applies and
#      leaves n1's subscription without error.
#
# n2 is sampled every 50 ms between the INSERT and the moment the row
# appears (a poll: it ends as soon as the row is there).  No randomness.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

# Debian's faketime package (scripts/install-deps.sh installs it); on
# amd64 /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1.
my ($libfaketime) = glob('/usr/lib/*/faketime/libfaketime.so.1');
die "libfaketime not found (Debian package faketime; scripts/install-deps.sh installs it)\n"
  unless defined $libfaketime && -f $libfaketime;
my $ahead_s = 8;

diag("230_clock_skew: deterministic (no random seed); provider n1 runs ${ahead_s}s ahead");

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);

# Restart n1 with its clock ahead.  PostgreSQL::Test::Cluster::start runs
# pg_ctl with a copy of %ENV: set the variables for that call only, so
# that neither this script nor psql nor n2 sees the fake clock.
$n1->stop;
{
	local $ENV{LD_PRELOAD} = $libfaketime;
	local $ENV{FAKETIME}   = "+${ahead_s}s";
	$n1->start;
}
ok(!defined $ENV{LD_PRELOAD} && !defined $ENV{FAKETIME},
	'the fake clock variables are gone from the test\'s own environment');

# Clocks, in seconds since the epoch: n1's is ahead, n2's is not.
sub clock_of
{
	my ($node) = @_;
	my $t0 = Time::HiRes::time();
	my $c = $node->safe_psql('postgres', 'SELECT extract(epoch FROM clock_timestamp())');
	my $t1 = Time::HiRes::time();
	return ($c - $t1, $c - $t0);    # bounds of (node clock - real clock)
}
my ($lo1, $hi1) = clock_of($n1);
ok($lo1 > $ahead_s - 1 && $hi1 < $ahead_s + 1,
	"n1's clock is ${ahead_s}s ahead (between " . sprintf('%.3f and %.3f', $lo1, $hi1) . ')');
my ($lo2, $hi2) = clock_of($n2);
ok($lo2 > -1 && $hi2 < 1,
	"n2's clock is the real one (offset between " . sprintf('%.3f and %.3f', $lo2, $hi2) . ')');

run_on_all(\@nodes, 'CREATE TABLE skew (id int PRIMARY KEY, v text NOT NULL);');
add_tables(\@nodes, ['skew']);
build_mesh(\@nodes);
wait_replicating(\@nodes, 'mesh built');
wait_sync_complete(\@nodes);
wait_for_apply_all(\@nodes, label => 'set up');

# --- helpers ---------------------------------------------------------------

# ALTER SYSTEM on $node and reload; poll until a new session sees it.
sub set_guc
{
	my ($node, $name, $value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET $name = " . quote_literal($value) . "; SELECT pg_reload_conf();");
	ok($node->poll_query_until('postgres', "SELECT current_setting('$name') = '$value'"),
		$node->name . ": $name = '$value' after reload");
	return;
}

# Microseconds since the epoch of a timestamptz expression.
sub us { return "(extract(epoch FROM $_[0]) * 1000000)::bigint"; }

# INSERT on n1; returns n1's commit timestamp of the row (us).
sub insert_on_n1
{
	my ($id) = @_;
	$n1->safe_psql('postgres', "INSERT INTO skew VALUES ($id, 'from n1, ahead')");
	return $n1->safe_psql('postgres',
		'SELECT ' . us('pg_xact_commit_timestamp(xmin)') . " FROM skew WHERE id = $id");
}

# Sample n2 every 50 ms until row $id is there (or $TIMEOUT).  Returns the
# list of samples, each a hash: status, last_error, seen (row there),
# ts (its commit timestamp, us), ts_le_now, ts_le_clock, clock (us).
sub sample_until_applied
{
	my ($id) = @_;
	my $deadline = Time::HiRes::time() + $ConcordTest::TIMEOUT;
	my @samples;
	while (Time::HiRes::time() < $deadline)
	{
		my $out = $n2->safe_psql('postgres', qq{
			SELECT s.status, t.ts IS NOT NULL, coalesce(} . us('t.ts') . qq{, 0),
			       coalesce(t.ts <= now(), false), coalesce(t.ts <= clock_timestamp(), false),
			       } . us('clock_timestamp()') . qq{, coalesce(s.last_error, '')
			  FROM concord.subscription_status s
			  LEFT JOIN (SELECT pg_xact_commit_timestamp(xmin) AS ts
			               FROM skew WHERE id = $id) t ON true
			 WHERE s.subscription_name = 'sub_n2_n1'});
		my ($status, $seen, $ts, $le_now, $le_clock, $clock, $err) = split /\|/, $out, 7;
		push @samples, {
			status => $status, seen => $seen eq 't', ts => $ts,
			ts_le_now => $le_now eq 't', ts_le_clock => $le_clock eq 't',
			clock => $clock, last_error => $err // '' };
		last if $seen eq 't';
		Time::HiRes::usleep(50_000);
	}
	return @samples;
}

# Runs of samples with the same status, presence and last_error, one line
# each: times relative to $base (us), ts-clock of the row once seen.
sub describe
{
	my ($base, @samples) = @_;
	my @runs;
	foreach my $x (@samples)
	{
		my $key = join('|', $x->{status}, $x->{seen}, $x->{last_error});
		if (@runs && $runs[-1]{key} eq $key) { $runs[-1]{last} = $x; $runs[-1]{n}++; }
		else { push @runs, { key => $key, first => $x, last => $x, n => 1 }; }
	}
	return join("\n", map {
			my ($f, $l) = ($_->{first}, $_->{last});
			sprintf('%+.3fs..%+.3fs (%d samples) %s seen=%d%s %s',
				($f->{clock} - $base) / 1e6, ($l->{clock} - $base) / 1e6, $_->{n},
				$f->{status}, $f->{seen},
				$f->{seen} ? sprintf(' ts-clock=%+.3fs', ($f->{ts} - $f->{clock}) / 1e6) : '',
				$f->{last_error})
	} @runs);
}

sub warnings_since
{
	my ($offset) = @_;
	my $log = slurp_file($n2->logfile, $offset);
	my @w = $log =~ /WARNING:  (the commit timestamp of a transaction from node [^\n]*)/g;
	return @w;
}

# --- 1. skew beyond max_clock_skew ---------------------------------------------
set_guc($n2, 'concord.max_clock_skew', '2s');
is($n2->safe_psql('postgres', q{SELECT status || '/' || coalesce(last_error, '-')
	   FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1'}),
	'replicating/-', 'before the insert: sub_n2_n1 is replicating without error');

my $log_offset = -s $n2->logfile;
my $ts1 = insert_on_n1(1);
my @s = sample_until_applied(1);
my $first = $s[-1];
note("samples of n2 (phase 1), time relative to n1's commit timestamp:\n"
	  . describe($ts1, @s));

ok($first->{seen}, 'skew 2s: the row from n1 reached n2') or diag(status_report(\@nodes));
is($first->{ts}, $ts1, 'skew 2s: n2 keeps the origin\'s commit timestamp of the row');
ok($first->{ts_le_now},
	'skew 2s: when first seen on n2, the row\'s commit timestamp is <= n2\'s now()')
  or diag(describe($ts1, $first));
ok($first->{ts_le_clock},
	'skew 2s: when first seen on n2, the row\'s commit timestamp is <= n2\'s clock_timestamp()');

my @waiting = grep { !$_->{seen} } @s;
ok(scalar(grep { $_->{clock} < $ts1 - 2_000_000 } @waiting),
	'skew 2s: n2 sampled the row as absent while its clock was more than 2s behind the commit')
  or diag(describe($ts1, @s));
my @down = grep {
	$_->{status} eq 'down'
	  && $_->{last_error} =~ /max_clock_skew \(2000 ms\)/
	  && $_->{last_error} =~ /from node "n1"/
	  && $_->{last_error} =~ /subscription "sub_n2_n1"/
} @waiting;
ok(scalar @down,
	'skew 2s: while waiting, sub_n2_n1 was down with a last_error naming max_clock_skew (2000 ms), n1 and the subscription'
) or diag(describe($ts1, @s));
if (@down)
{
	note("last_error while waiting: $down[0]{last_error}");
	my ($ms) = $down[0]{last_error} =~ /is (\d+) ms ahead/;
	ok(defined $ms && $ms > 2000 && $ms <= $ahead_s * 1000,
		"skew 2s: last_error reports how far ahead the commit is (${\($ms // 'none')} ms)");
}

wait_replicating([$n2], 'skew 2s, applied');
is($n2->safe_psql('postgres', q{SELECT status || '/' || coalesce(last_error, '-')
	   FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1'}),
	'replicating/-', 'skew 2s: after the apply, sub_n2_n1 is replicating again, without last_error');
my @w = warnings_since($log_offset);
is(scalar @w, 1, 'skew 2s: n2 logged the skew once as a WARNING')
  or diag(join("\n", @w));
wait_for_apply_all(\@nodes, label => 'skew 2s');
checksums_match(\@nodes, ['skew'], 'skew 2s');

# --- 2. skew within max_clock_skew -----------------------------------------------
set_guc($n2, 'concord.max_clock_skew', '20s');
$log_offset = -s $n2->logfile;
my $ts2 = insert_on_n1(2);
@s = sample_until_applied(2);
$first = $s[-1];
note("samples of n2 (phase 2), time relative to n1's commit timestamp:\n"
	  . describe($ts2, @s));

ok($first->{seen}, 'skew 20s: the row from n1 reached n2') or diag(status_report(\@nodes));
is($first->{ts}, $ts2, 'skew 20s: n2 keeps the origin\'s commit timestamp of the row');
ok($first->{ts_le_now} && $first->{ts_le_clock},
	'skew 20s: when first seen on n2, the row\'s commit timestamp is <= n2\'s now() and clock')
  or diag(describe($ts2, $first));
@waiting = grep { !$_->{seen} } @s;
ok(scalar(grep { $_->{clock} < $ts2 - 2_000_000 } @waiting),
	'skew 20s: apply still held the row back while n2\'s clock was behind the commit')
  or diag(describe($ts2, @s));
my @bad = grep { $_->{status} ne 'replicating' || $_->{last_error} ne '' } @s;
ok(!@bad, 'skew 20s: sub_n2_n1 stayed replicating without last_error in all ' . scalar(@s) . ' samples')
  or diag(describe($ts2, @bad));
is(scalar(warnings_since($log_offset)), 0, 'skew 20s: no skew WARNING logged');
wait_for_apply_all(\@nodes, label => 'skew 20s');
checksums_match(\@nodes, ['skew'], 'skew 20s');

# --- 3. the other direction -------------------------------------------------------
$n2->safe_psql('postgres', "INSERT INTO skew VALUES (3, 'from n2, behind')");
ok(wait_for_apply_one($n1, 'sub_n1_n2', $n2), 'n2 -> n1: applied on n1')
  or diag(status_report(\@nodes));
is($n1->safe_psql('postgres', 'SELECT v FROM skew WHERE id = 3'), 'from n2, behind',
	'n2 -> n1: the row is on n1');
is($n1->safe_psql('postgres', q{SELECT status || '/' || coalesce(last_error, '-')
	   FROM concord.subscription_status WHERE subscription_name = 'sub_n1_n2'}),
	'replicating/-', 'n2 -> n1: sub_n1_n2 is replicating without error');
wait_for_apply_all(\@nodes, label => 'final');
checksums_match(\@nodes, ['skew'], 'final');
is(count_of($n2, 'skew'), '3', 'n2 holds the three rows');

# --- 4. disabling while apply waits for the clock ---------------------------------
# n1 is 8 s ahead: once n2 has received the transaction, its apply worker
# waits for the clock; a disable must stop it within a few seconds, before
# it applies the waiting transaction.
$n1->safe_psql('postgres', "INSERT INTO skew VALUES (4, 'waits, then disabled')");
ok( $n2->poll_query_until('postgres',
		q{SELECT EXISTS (SELECT FROM pg_stat_activity
		                  WHERE backend_type = 'concord apply'
		                    AND query LIKE 'waiting for the local clock%')}),
	'disable: n2 received the transaction and waits for its clock');
$n2->safe_psql('postgres', "SELECT concord.alter_subscription_disable('sub_n2_n1')");
my $after = $n2->safe_psql('postgres', q{
	DO $$ BEGIN
	  FOR i IN 1..30 LOOP   -- at most 3 s, well under the 8 s of skew
	    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'concord apply');
	    PERFORM pg_sleep(0.1);
	  END LOOP;
	END $$;
	SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'concord apply')
	       || '/' || (SELECT count(*) FROM skew WHERE id = 4)});
is($after, '0/0',
	'disable: the waiting worker stopped within 3 s, without applying the transaction');
$n2->safe_psql('postgres', "SELECT concord.alter_subscription_enable('sub_n2_n1')");
wait_for_apply_all(\@nodes, label => 'disable while waiting');
is($n2->safe_psql('postgres', 'SELECT v FROM skew WHERE id = 4'), 'waits, then disabled',
	'disable: after enable, the row arrives');
checksums_match(\@nodes, ['skew'], 'after the disable');

$_->stop foreach @nodes;
done_testing();
