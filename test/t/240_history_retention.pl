# concord.conflict_history_retention: the manager trims old history rows.
#
# Two nodes n1 and n2 in a mesh, one table.  The nodes are partitioned
# (every subscription disabled, no apply worker left), both insert keys
# 1..3, and the subscriptions are enabled again: each node records three
# insert_exists conflicts in concord.conflict_history.
#
#   1. Every history row is backdated by 2 hours on both nodes; n1 gets
#      concord.conflict_history_retention = '60min' (ALTER SYSTEM + reload),
#      n2 keeps the default (0: forever).  n1's manager empties n1's history
#      (poll, up to 180 s: it trims at most once a minute); n2 keeps its
#      three rows.
#   2. Fresh conflicts (keys 11..13, same partition dance): on n1, the row
#      of key 11 is backdated by 2 hours (the canary of the next trim),
#      the row of key 12 by 50 minutes, key 13's stays as it is.  Once the
#      canary is gone (a trim ran after the fresh rows existed), the rows
#      of keys 12 and 13, younger than 60 minutes, are still there;
#      conflict_stats (a view over the history) counts what is kept.
# No randomness.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

diag('240_history_retention: deterministic (no random seed)');

my ($n1, $n2) = concord_nodes(2);
my @nodes = ($n1, $n2);

setup_mesh(\@nodes, 'CREATE TABLE hist (id int PRIMARY KEY, v text NOT NULL);',
	['hist']);

# Keys @keys inserted on both nodes while partitioned: one insert_exists
# per key on each node once healed.
sub conflicts_on
{
	my ($label, @keys) = @_;
	partition_nodes(\@nodes, "$label: partitioned");
	foreach my $n (@nodes)
	{
		my $nn = $n->name;
		$n->safe_psql('postgres', "INSERT INTO hist VALUES ($_, '$nn k$_')") foreach @keys;
	}
	heal_nodes(\@nodes, "$label: healed");
	checksums_match(\@nodes, ['hist'], $label);
	return;
}

# "key:conflict_type" of the history rows, in key order.
sub history
{
	my ($n) = @_;
	return $n->safe_psql('postgres',
		q{SELECT string_agg((key->>'id') || ':' || conflict_type, ',' ORDER BY (key->>'id')::int)
		    FROM concord.conflict_history});
}

# Poll $query on $node until it returns 't', up to $seconds (wall clock).
sub poll_for
{
	my ($node, $query, $seconds) = @_;
	my $deadline = Time::HiRes::time() + $seconds;
	while (Time::HiRes::time() < $deadline)
	{
		return 1 if $node->safe_psql('postgres', $query) eq 't';
		Time::HiRes::usleep(200_000);
	}
	return 0;
}

# --- 1. conflicts, backdated, trimmed on n1 only ------------------------------
conflicts_on('first conflicts', 1 .. 3);
foreach my $n (@nodes)
{
	is(history($n), '1:insert_exists,2:insert_exists,3:insert_exists',
		$n->name . ': conflict_history holds one insert_exists per key');
	is($n->safe_psql('postgres',
			q{SELECT bool_and(detected_at > now() - interval '10 min') FROM concord.conflict_history}),
		't', $n->name . ': the history rows were detected just now');
}

# Nothing is trimmed while the retention is 0 (the default).
is($n1->safe_psql('postgres', q{SHOW concord.conflict_history_retention}), '0',
	'n1: conflict_history_retention defaults to 0');

run_on_all(\@nodes,
	q{UPDATE concord.conflict_history SET detected_at = now() - interval '2 hours'});
$n1->safe_psql('postgres',
	q{ALTER SYSTEM SET concord.conflict_history_retention = '60min'; SELECT pg_reload_conf();});
ok($n1->poll_query_until('postgres',
		q{SELECT current_setting('concord.conflict_history_retention') = '1h'}),
	'n1: conflict_history_retention = 60min after reload');

my $t0 = Time::HiRes::time();
my $trimmed = poll_for($n1, q{SELECT NOT EXISTS (SELECT FROM concord.conflict_history)}, 180);
ok($trimmed, sprintf('n1: the manager trimmed the 2-hour-old history rows (after %.1fs)',
		Time::HiRes::time() - $t0))
  or diag("n1 history: " . history($n1) . "\n"
	  . $n1->safe_psql('postgres',
		q{SELECT pid, backend_type, state FROM pg_stat_activity WHERE backend_type LIKE 'concord%'})
	  . "\n" . status_report(\@nodes));
is(history($n2), '1:insert_exists,2:insert_exists,3:insert_exists',
	'n2 (retention 0): keeps its 2-hour-old history rows');
is(count_of($n1, 'hist'), '3', 'n1: the trim touched no replicated data');

# --- 2. fresh conflicts stay ---------------------------------------------------
conflicts_on('fresh conflicts', 11 .. 13);
is(history($n1), '11:insert_exists,12:insert_exists,13:insert_exists',
	'n1: the fresh conflicts are recorded');
is(history($n2),
	'1:insert_exists,2:insert_exists,3:insert_exists,11:insert_exists,12:insert_exists,13:insert_exists',
	'n2: the fresh conflicts are recorded next to the old ones');

# Key 11: the canary, older than the retention; key 12: 50 minutes old,
# within it; key 13: untouched.
$n1->safe_psql('postgres', q{
	UPDATE concord.conflict_history SET detected_at = now() - interval '2 hours'
	 WHERE key->>'id' = '11';
	UPDATE concord.conflict_history SET detected_at = now() - interval '50 minutes'
	 WHERE key->>'id' = '12';});
$t0 = Time::HiRes::time();
ok(poll_for($n1,
		q{SELECT NOT EXISTS (SELECT FROM concord.conflict_history WHERE key->>'id' = '11')},
		180),
	sprintf('n1: the next trim removed the 2-hour-old row of key 11 (after %.1fs)',
		Time::HiRes::time() - $t0))
  or diag("n1 history: " . history($n1));
is(history($n1), '12:insert_exists,13:insert_exists',
	'n1: the rows younger than the retention (50 min, fresh) stay');

# conflict_stats is a view over the history: it counts what is kept.
my %kept = (n1 => 2, n2 => 6);
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres',
			q{SELECT coalesce(sum(conflicts), 0) FROM concord.conflict_stats
			   WHERE conflict_type = 'insert_exists'}),
		$kept{ $n->name }, $n->name . ': conflict_stats counts the kept history rows');
}

$_->stop foreach @nodes;
done_testing();
