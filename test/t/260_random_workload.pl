# A randomized workload on a 3-node mesh, round after round, checked
# against the resolvers' rules (SPEC §5).
#
# Nodes n1 (priority 1), n2 (priority 3), n3 (priority 2), every node
# subscribed to every other (forward_origins '{}'), track_commit_timestamp
# on (test/regress.conf).  One table per resolver, each (id int PRIMARY
# KEY, v text, big text: a large value, out of line, that only an INSERT
# writes), keys 1..20, the resolver set on every node:
#   t_lww  last_update_wins, t_fuw  first_update_wins,
#   t_prio replica_priority.
# Table t_mark holds one row per node, written only by that node: each
# round starts with every node updating its own row and everybody applying
# the others' (so that every node has applied the latest transaction of
# every origin before the round's writes, also after a crash, whose saved
# vector may be up to 5 s old: README, "Causality").
#
# 12 rounds.  Isolated rounds (10): every subscription disabled (no apply
# worker left), then 8..15 random single-statement transactions per node
# and table, in a random global interleaving, two thirds of them on 8
# "hot" keys of the round: INSERT ... ON CONFLICT DO NOTHING, UPDATE,
# DELETE, upsert (INSERT ... ON CONFLICT (id) DO UPDATE), and DELETE
# followed by INSERT of the same key.  Every transaction that changed a
# row is recorded with its commit timestamp (read on its node, in
# microseconds, from pg_xact_commit_timestamp of its xid); a statement
# that changed nothing (an UPDATE of an absent key, ...) is no write.
# In some rounds (at least one per run) a node is stopped with
# pg_ctl stop -m immediate in the middle of the writes and started again a
# few transactions later; it writes nothing while down, and after its
# restart only into t_lww (its vector may be stale: README, "After a
# crash": a causally later change counts as concurrent, which only
# last_update_wins settles in favour of the later change).
# Then every subscription is enabled again and everything is applied.
# Expected, per key, from this round's commits: each node's version is its
# last write of the key (a DELETE: the key absent); versions of different
# nodes are concurrent; the key holds
#   - no version: what it held before the round;
#   - one version: that one;
#   - several: last_update_wins: the latest commit timestamp;
#     first_update_wins: the earliest; replica_priority: the version of
#     the node with the highest priority (equal: the latest timestamp);
#     equal timestamps: the version of the higher node name.
# In t_fuw each node writes a key at most once per round (later writes of
# the same key are skipped): first_update_wins compares versions pairwise
# and cannot converge when one side rewrites a row while apart (README,
# "Which resolvers converge").
#
# Mixed rounds (2, last_update_wins only, 8..23 transactions per node):
# no subscription disabled in the first, a random subset in the second, so
# that writes are partly causal, partly concurrent; UPDATE, DELETE and
# upserts, which insert a key absent on the writer: an UPDATE of it from
# another node may reach a third node before the INSERT, over a link that
# is down, and is held there until the INSERT is applied (issue 18,
# concord.causal_wait; docs/conflicts.md "An UPDATE that overtakes its
# cause").
# Expected: per key, the write with the latest commit timestamp over all
# nodes (a causally later write has the later timestamp: README "Clocks").
#
# Pass criteria after each round, per table: the three nodes hold
# identical rows (ordered dumps), and each holds the expected rows.  A key
# found wrong is reported with its writes, what each node holds and the
# round's history rows of that key, and then repaired (resolver
# apply_remote for the table on every node, n1 writes the expected value,
# everything applied, resolver set back) so that the next rounds start
# from a known state.  At the end: every node has history rows, all with
# resolution apply_remote, keep_local or skip; every subscription is
# replicating.  If a heal does not catch up, the rounds stop there.
# The seed is printed; CONCORD_SEED=<n> replays the same workload (the
# same statements; which apply worker goes first stays a race).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use ConcordRounds;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = ($ENV{CONCORD_SEED} // '') =~ /^\d+$/ ? $ENV{CONCORD_SEED} : int(rand(1 << 30));
diag("260_random_workload: random seed $seed (CONCORD_SEED=$seed replays it)");
srand($seed);

my $ROUNDS = 12;
my $NKEYS  = 20;

my @names = qw(n1 n2 n3);
my %priority = (n1 => 1, n2 => 3, n3 => 2);
my %node;
$node{$_} = concord_node($_, priority => $priority{$_}) foreach @names;
my @nodes = map { $node{$_} } @names;

my %resolver = (
	t_lww  => 'last_update_wins',
	t_fuw  => 'first_update_wins',
	t_prio => 'replica_priority');
my @tables = qw(t_lww t_fuw t_prio);

sub set_resolver_sql
{
	my ($t, $r) = @_;
	return "SELECT concord.set_conflict_resolver('$t', '$r');\n";
}

# Every table has a large column too, stored out of line and written only
# by an INSERT (big_text(id)): updates and upserts leave it unchanged, so
# an UPDATE that wins over a concurrent DELETE must bring it back whole
# (issue 16).  Checked after every round: no node holds a row whose large
# value is not big_text(id).
setup_mesh(\@nodes,
	q{CREATE FUNCTION big_text(i int) RETURNS text LANGUAGE sql IMMUTABLE
	      AS $$ SELECT string_agg(md5(i || ':' || g), '') FROM generate_series(1, 700) g $$;
}
	  . join('', map { "CREATE TABLE $_ (id int PRIMARY KEY, v text NOT NULL, big text);\n" } @tables)
	  . "CREATE TABLE t_mark (node text PRIMARY KEY, n int NOT NULL);\n"
	  . join('', map { set_resolver_sql($_, $resolver{$_}) } @tables),
	[ @tables, 't_mark' ]);

foreach my $n (@nodes)
{
	is( $n->safe_psql('postgres',
			q{SELECT current_setting('track_commit_timestamp') || ' '
			         || string_agg(node_name || '=' || priority, ',' ORDER BY node_name)
			    FROM concord.node}),
		'on n1=1,n2=3,n3=2',
		$n->name . ': track_commit_timestamp is on, the node knows every priority');
}

# --- helpers -------------------------------------------------------------------

sub max_conflict_id
{
	my ($n) = @_;
	return $n->safe_psql('postgres', 'SELECT coalesce(max(conflict_id), 0) FROM concord.conflict_history');
}

# Enable every subscription of every node, wait until they replicate and
# until every node applied everything the others wrote.
sub heal_all
{
	my ($label) = @_;
	foreach my $n (@nodes)
	{
		$n->safe_psql('postgres',
			join('', map { "SELECT concord.alter_subscription_enable('$_->{name}');\n" }
				  subscriptions_of($n)));
	}
	my $ok = wait_replicating(\@nodes, $label);
	$ok = wait_for_apply_all(\@nodes, rounds => 1, label => $label) && $ok;
	return $ok;
}

# One write in its own transaction.  $no_insert: roll back if the
# statement inserted a row.  Returns (rows changed and committed, commit
# timestamp in microseconds or undef).
sub run_op
{
	my ($op, $no_insert) = @_;
	my ($t, $k, $v) = @$op{qw(table key v)};
	my ($stmt, $ins);
	if ($op->{kind} eq 'insert')
	{
		$stmt = "INSERT INTO $t VALUES ($k, '$v', big_text($k)) ON CONFLICT DO NOTHING";
		$ins  = 'xmax = 0';
	}
	elsif ($op->{kind} eq 'upsert')
	{
		$stmt = "INSERT INTO $t VALUES ($k, '$v', big_text($k)) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v";
		$ins  = 'xmax = 0';
	}
	elsif ($op->{kind} eq 'update')
	{
		$stmt = "UPDATE $t SET v = '$v' WHERE id = $k";
		$ins  = 'false';
	}
	else
	{
		$stmt = "DELETE FROM $t WHERE id = $k";
		$ins  = 'false';
	}
	my $noins = $no_insert ? 'true' : 'false';
	my $out = $node{ $op->{node} }->safe_psql('postgres', qq{
BEGIN;
WITH w AS ($stmt RETURNING ($ins) AS ins) SELECT count(*) AS n, count(*) FILTER (WHERE ins) AS ins FROM w \\gset
SELECT coalesce(pg_current_xact_id_if_assigned()::text, '0') AS x,
       CASE WHEN $noins AND :ins > 0 THEN 'ROLLBACK' ELSE 'COMMIT' END AS fin \\gset
:fin;
SELECT CASE WHEN :'fin' = 'COMMIT' THEN :n ELSE 0 END,
       CASE WHEN :n > 0 AND :'fin' = 'COMMIT'
            THEN (extract(epoch FROM pg_xact_commit_timestamp(:'x'::xid)) * 1000000)::bigint END;
});
	my ($n, $ts) = split /\|/, $out;
	return ($n, ($ts // '') eq '' ? undef : $ts);
}

# Does version $a beat version $b under $r?  Versions: { node, ts }.
sub beats
{
	return rounds_beats(\%priority, @_);
}

sub show_write
{
	my ($w) = @_;
	return "$w->{kind}" . (defined $w->{v} ? " '$w->{v}'" : '') . " \@$w->{ts}";
}

# Sets $t to the expected rows on every node: resolver apply_remote for
# the table on every node, n1 writes the expected state of the wrong keys,
# everybody applies it, the resolver is set back.
my $repairs = 0;

sub repair
{
	my ($t, $keys, $expected, $label) = @_;
	$repairs++;
	rounds_repair(\@nodes, $node{n1}, $t, $keys, $expected, $resolver{$t}, $label);
	return;
}

# --- initial rows ------------------------------------------------------------------
# About 60% of the keys, each written by a random node, one at a time
# (nothing concurrent).
my %state;    # {table}{key} = v (undef: absent)
foreach my $t (@tables)
{
	foreach my $k (1 .. $NKEYS)
	{
		next unless rand() < 0.6;
		my $nn = $names[ int(rand(3)) ];
		$state{$t}{$k} = "$nn init $k";
		$node{$nn}->safe_psql('postgres', "INSERT INTO $t VALUES ($k, '$state{$t}{$k}', big_text($k))");
	}
}
wait_for_apply_all(\@nodes, rounds => 1, label => 'initial rows');
foreach my $t (@tables)
{
	foreach my $n (@nodes)
	{
		is(rounds_dump_of($n, $t), rounds_dump_from($state{$t}), "initial rows: $t on " . $n->name);
	}
}

# --- the plan ----------------------------------------------------------------------
# Two mixed rounds (never the first); a crash in about a third of the
# isolated rounds, at least one.
my %mixed;    # round => 1 for the first mixed round, 2 for the second
my @mixed_rounds = sort { $a <=> $b } (rounds_shuffle(2 .. $ROUNDS))[ 0, 1 ];
@mixed{@mixed_rounds} = (1, 2);
my @isolated = grep { !$mixed{$_} } 1 .. $ROUNDS;
my %crash = map { $_ => 1 } grep { rand() < 0.3 } @isolated;
$crash{ $isolated[ int(rand(scalar @isolated)) ] } = 1 unless %crash;
note('plan: mixed rounds ' . join(',', sort { $a <=> $b } keys %mixed)
	  . '; crash in rounds ' . join(',', sort { $a <=> $b } keys %crash));

my %problems;    # "kind" => count, for the summary

foreach my $round (1 .. $ROUNDS)
{
	my $label = "round $round";
	my $mixed = $mixed{$round};

	# Every node applies the latest transaction of every origin.
	foreach my $n (@nodes)
	{
		$n->safe_psql('postgres',
			"INSERT INTO t_mark VALUES ('" . $n->name . "', $round)
			 ON CONFLICT (node) DO UPDATE SET n = EXCLUDED.n");
	}
	wait_for_apply_all(\@nodes, rounds => 1, label => "$label: markers");
	my %since = map { $_->name => max_conflict_id($_) } @nodes;

	# --- partition ---
	my @round_tables = $mixed ? ('t_lww') : @tables;
	my @disabled;
	if ($mixed)
	{
		foreach my $n (@nodes)
		{
			foreach my $s (subscriptions_of($n))
			{
				# the first mixed round disables none
				next unless $mixed > 1 && rand() < 0.4;
				$n->safe_psql('postgres', "SELECT concord.alter_subscription_disable('$s->{name}')");
				push @disabled, $s->{name};
			}
		}
		note("$label: mixed (last_update_wins only), disabled: " . (join(', ', @disabled) || 'none'));
	}
	else
	{
		partition_nodes(\@nodes, $label);
	}

	# --- the writes ---
	my @groups;
	my $seq = 0;
	my @hot = (rounds_shuffle(1 .. $NKEYS))[ 0 .. 7 ];
	foreach my $nn (@names)
	{
		foreach my $t (@round_tables)
		{
			foreach (1 .. 8 + int(rand($mixed ? 16 : 8)))
			{
				# two thirds of the writes go to the round's hot keys
				my $k = rand() < 0.67 ? $hot[ int(rand(scalar @hot)) ] : 1 + int(rand($NKEYS));
				my $r = rand();
				my @kinds =
				    $mixed ? ($r < 0.5 ? 'update' : $r < 0.7 ? 'delete' : 'upsert')
				  : $r < 0.22 ? 'insert'
				  : $r < 0.47 ? 'upsert'
				  : $r < 0.72 ? 'update'
				  : $r < 0.90 ? 'delete'
				  :             ('delete', 'insert');
				push @groups,
				  [ map { { node => $nn, table => $t, key => $k, kind => $_ } } @kinds ];
			}
		}
	}
	my @ops = map { @$_ } rounds_shuffle(@groups);
	foreach my $op (@ops)
	{
		$seq++;
		$op->{v} = "$op->{node} r$round #$seq" unless $op->{kind} eq 'delete';
	}

	my ($crash_node, $crash_at, $restart_at);
	if ($crash{$round})
	{
		$crash_node = $names[ int(rand(3)) ];
		$crash_at   = int(rand(scalar @ops));
		$restart_at = $crash_at + 1 + int(rand(8));
		note("$label: $crash_node stops (immediate) before write "
			  . ($crash_at + 1) . " of " . scalar(@ops)
			  . ", starts again before write " . ($restart_at + 1));
	}

	my %writes;    # {table}{key} = [ { node, kind, v, ts }, ... ] in commit order
	my ($down, $restarted) = (0, 0);
	my $nwrites = 0;
	my %fuw_written;    # {node}{key}: wrote that key of t_fuw this round
	foreach my $i (0 .. $#ops)
	{
		if (defined $crash_node && $i == $crash_at)
		{
			$node{$crash_node}->stop('immediate');
			$down = 1;
		}
		if ($down && $i == $restart_at)
		{
			$node{$crash_node}->start;
			($down, $restarted) = (0, 1);
		}
		my $op = $ops[$i];
		if (defined $crash_node && $op->{node} eq $crash_node)
		{
			next if $down;
			next if $restarted && $op->{table} ne 't_lww';
		}
		# first_update_wins converges when each node writes a key at most
		# once while apart (README, "Which resolvers converge").
		next if $op->{table} eq 't_fuw' && $fuw_written{ $op->{node} }{ $op->{key} };
		my ($n, $ts) = run_op($op, 0);
		next unless $n > 0;
		$fuw_written{ $op->{node} }{ $op->{key} } = 1 if $op->{table} eq 't_fuw';
		die "no commit timestamp for a write of $op->{node}" unless defined $ts;
		push @{ $writes{ $op->{table} }{ $op->{key} } },
		  { node => $op->{node}, kind => $op->{kind}, v => $op->{v}, ts => $ts };
		$nwrites++;
	}
	if ($down)
	{
		$node{$crash_node}->start;
	}
	note("$label: " . scalar(@ops) . " statements, $nwrites changed a row");

	# --- heal ---
	if (!heal_all("$label healed"))
	{
		# Every later wait would time out too.
		diag("$label: the nodes did not catch up (seed $seed): no further rounds");
		last;
	}

	# --- expected rows ---
	my %expected;
	my %concurrent;    # {table} = number of keys written on several nodes
	foreach my $t (@round_tables)
	{
		foreach my $k (1 .. $NKEYS)
		{
			my $ws = $writes{$t}{$k};
			my $winner;
			if ($ws && $mixed)
			{
				foreach my $w (@$ws)
				{
					$winner = $w if !$winner || beats('last_update_wins', $w, $winner);
				}
			}
			elsif ($ws)
			{
				my %last;
				$last{ $_->{node} } = $_ foreach @$ws;
				$concurrent{$t}++ if keys %last > 1;
				foreach my $nn (sort keys %last)
				{
					$winner = $last{$nn}
					  if !$winner || beats($resolver{$t}, $last{$nn}, $winner);
				}
			}
			$expected{$t}{$k} = $winner ? $winner->{v} : $state{$t}{$k};
		}
		note("$label: $t: keys written on several nodes: " . ($concurrent{$t} // 0))
		  unless $mixed;
	}

	# --- checks ---
	foreach my $t (@round_tables)
	{
		my %dump = map { $_->name => rounds_dump_of($_, $t) } @nodes;
		my $want = rounds_dump_from($expected{$t});
		foreach my $n (@nodes)
		{
			is( $n->safe_psql('postgres',
					"SELECT string_agg(id::text, ',') FROM $t WHERE big IS DISTINCT FROM big_text(id)"),
				'', "$label: $t: every row on " . $n->name . ' has its large value, whole');
		}
		is($dump{n2}, $dump{n1}, "$label: $t: n2 holds the same rows as n1");
		is($dump{n3}, $dump{n1}, "$label: $t: n3 holds the same rows as n1");
		my $good = 1;
		foreach my $nn (@names)
		{
			my $ok = is($dump{$nn}, $want,
				"$label: $t: $nn holds what $resolver{$t} dictates ("
				  . ($mixed ? 'latest write' : "this round's versions") . ')');
			$good &&= $ok;
		}
		next if $good;

		my %holds = map { $_ => rounds_parse_dump($dump{$_}) } @names;
		my @bad;
		my $report = "$label: $t ($resolver{$t}"
		  . ($mixed ? ', mixed round, disabled: ' . (join(', ', @disabled) || 'none') : '')
		  . (defined $crash_node ? ", $crash_node crashed" : '')
		  . "), seed $seed, keys not as expected:\n";
		foreach my $k (1 .. $NKEYS)
		{
			my $e = $expected{$t}{$k};
			next unless grep { ($holds{$_}{$k} // "\0") ne ($e // "\0") } @names;
			push @bad, $k;
			my $ws = $writes{$t}{$k} // [];
			$report .= "  key $k: before the round " . rounds_show($state{$t}{$k})
			  . ", expected " . rounds_show($e) . "\n";
			foreach my $nn (@names)
			{
				my @mine = grep { $_->{node} eq $nn } @$ws;
				$report .= "    $nn (priority $priority{$nn}) wrote: "
				  . (join(', ', map { show_write($_) } @mine) || 'nothing')
				  . "; holds " . rounds_show($holds{$nn}{$k}) . "\n";
			}
			$report .= rounds_key_history(\@nodes, $t, $k, \%since);
			my $shape = join(' ',
				map {
					my $nn = $_;
					my @mine = map { $_->{kind} } grep { $_->{node} eq $nn } @$ws;
					@mine ? "$nn:" . join('+', @mine) : ()
				} @names);
			$problems{ "$resolver{$t}" . ($mixed ? ' (mixed)' : '') . ": $shape" }++;
		}
		diag($report);
		repair($t, \@bad, $expected{$t}, $label);
	}
	$state{$_} = $expected{$_} foreach @round_tables;
}

# --- after every round ---------------------------------------------------------------
foreach my $n (@nodes)
{
	my ($total, $bad) = split /\|/, $n->safe_psql('postgres', q{
		SELECT count(*),
		       count(*) FILTER (WHERE resolution NOT IN ('apply_remote', 'keep_local', 'skip'))
		  FROM concord.conflict_history});
	cmp_ok($total, '>', 0, $n->name . ": concord.conflict_history has rows ($total)");
	is($bad, 0, $n->name . ': every history row is resolved apply_remote, keep_local or skip')
	  or diag(conflict_history_of($n));
	is( $n->safe_psql('postgres', q{
			SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'replicating')
			  FROM concord.subscription_status}),
		'2 2', $n->name . ': both subscriptions are replicating (none down)')
	  or diag(status_report(\@nodes));
	note($n->name . ": conflicts by table, type and resolution:\n"
		  . $n->safe_psql('postgres', q{
			SELECT relation, conflict_type, resolver, resolution, count(*)
			  FROM concord.conflict_history GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4}));
}
if (%problems)
{
	diag("seed $seed: wrong keys by resolver and writes (node:kinds in commit order):\n"
		  . join('', map { "  $problems{$_} x $_\n" } sort keys %problems)
		  . "($repairs repairs)");
}

$_->stop foreach @nodes;
done_testing();
