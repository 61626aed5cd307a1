# Randomized rounds of conflicting writes on four nodes in a ring or a
# star, checked against the resolvers' rules (SPEC §4, §5; issue 17).
#
# Nodes n1 (priority 1), n2 (4), n3 (2), n4 (3), track_commit_timestamp
# on (test/regress.conf).
#   ring: n1 -> n2 -> n3 -> n4 -> n1, each subscribed to its predecessor
#         with forward_origins '{all}': a change reaches the node before
#         its writer through every other node.
#   star: n1 is the hub; each leaf subscribes to n1 with forward_origins
#         '{all}', n1 to each leaf with '{}': a leaf's change reaches the
#         other leaves through n1.
# One table per resolver, each (id int PRIMARY KEY, v text, big text: a
# large value, out of line, that only an INSERT writes), keys 1..20:
#   t_lww  last_update_wins, t_fuw  first_update_wins,
#   t_prio replica_priority.
# Before the rounds, every node must list every node with its priority in
# concord.node, those it hears of only through another node too.
# Table t_mark holds one row per node, written only by that node: each
# round starts with every node updating its own row and everybody
# applying everything, so that every node has applied the latest
# transaction of every origin before the round's writes.
#
# Isolated rounds: every link cut (subscriptions disabled, no apply worker
# left), then 6..11 random single-statement transactions per node and
# table, in a random global interleaving, two thirds of them on 6 "hot"
# keys of the round: INSERT ... ON CONFLICT DO NOTHING, UPDATE, DELETE,
# upsert, and DELETE followed by INSERT of the same key.  Every
# transaction that changed a row is recorded with its commit timestamp (in
# microseconds, from pg_xact_commit_timestamp of its xid).  In t_fuw each
# node writes a key at most once per round (first_update_wins cannot
# converge when one side rewrites a row while apart: README, "Which
# resolvers converge").  Expected, per key: each node's version is its
# last write (a DELETE: the key absent); versions of different nodes are
# concurrent; the key holds what it held before the round if nobody wrote
# it, else the version the resolver prefers: last_update_wins the latest
# commit timestamp, first_update_wins the earliest, replica_priority that
# of the node with the highest priority; equal timestamps: the higher
# node name.
#
# Mixed rounds (last_update_wins only, 8..19 transactions per node): a
# random subset of the links is cut at the start, and during the writes a
# random link is cut or restored again and again, as in the report of
# issue 17; UPDATE, DELETE and upserts.  Writes are partly causal, partly
# concurrent.  Expected: per key, the write with the latest commit
# timestamp over all nodes (a causally later write has the later
# timestamp: one clock).
#
# Pass criteria after each round, per table: the four nodes hold identical
# rows, each holds the expected rows, and every row's large value is
# big_text(id).  A key found wrong is reported with its writes, what each
# node holds and the round's history rows of that key, and then repaired
# (resolver apply_remote for the table on every node, n1 writes the
# expected value, everything applied, resolver set back), so that the next
# rounds start from a known state.  At the end every subscription is
# replicating.  The seed is printed; CONCORD_SEED=<n> replays the same
# statements (which apply worker goes first stays a race).  The suite runs
# a ring with a fixed seed (545), a ring and a star with random ones (547,
# 546).
package ConcordRounds;

use strict;
use warnings;
use Exporter 'import';
use ConcordTest;
use Test::More;

our @EXPORT = qw(concord_random_rounds rounds_shuffle rounds_dump_of rounds_dump_from
  rounds_parse_dump rounds_show rounds_beats rounds_key_history rounds_repair);

my @NAMES = qw(n1 n2 n3 n4);
my %PRIORITY = (n1 => 1, n2 => 4, n3 => 2, n4 => 3);
my %RESOLVER = (
	t_lww  => 'last_update_wins',
	t_fuw  => 'first_update_wins',
	t_prio => 'replica_priority');
my @TABLES = qw(t_lww t_fuw t_prio);
my $NKEYS = 20;

sub rounds_shuffle
{
	my @a = @_;
	for (my $i = $#a; $i > 0; $i--)
	{
		my $j = int(rand($i + 1));
		@a[ $i, $j ] = @a[ $j, $i ];
	}
	return @a;
}

sub _resolver_sql
{
	my ($t, $r) = @_;
	return "SELECT concord.set_conflict_resolver('$t', '$r');\n";
}

sub rounds_dump_of
{
	my ($n, $t) = @_;
	return $n->safe_psql('postgres', "SELECT id, v FROM $t ORDER BY id");
}

sub rounds_dump_from
{
	my ($rows) = @_;
	return join("\n",
		map { "$_|$rows->{$_}" } grep { defined $rows->{$_} } sort { $a <=> $b } keys %$rows);
}

sub rounds_parse_dump
{
	my ($text) = @_;
	my %rows;
	foreach my $line (split /\n/, $text)
	{
		my ($id, $v) = split /\|/, $line, 2;
		$rows{$id} = $v;
	}
	return \%rows;
}

sub rounds_show
{
	my ($v) = @_;
	return defined $v ? "'$v'" : 'absent';
}

# Does version $a beat version $b under resolver $r?  Versions: { node,
# ts }; $priority: node name => priority.
sub rounds_beats
{
	my ($priority, $r, $a, $b) = @_;
	if ($r eq 'replica_priority' && $priority->{ $a->{node} } != $priority->{ $b->{node} })
	{
		return $priority->{ $a->{node} } > $priority->{ $b->{node} };
	}
	if ($a->{ts} != $b->{ts})
	{
		return $r eq 'first_update_wins' ? $a->{ts} < $b->{ts} : $a->{ts} > $b->{ts};
	}
	return $a->{node} gt $b->{node};
}

# One write in its own transaction: (rows changed, commit timestamp in
# microseconds or undef).
sub _run_op
{
	my ($node, $op) = @_;
	my ($t, $k, $v) = @$op{qw(table key v)};
	my %stmt = (
		insert => "INSERT INTO $t VALUES ($k, '$v', big_text($k)) ON CONFLICT DO NOTHING",
		upsert => "INSERT INTO $t VALUES ($k, '$v', big_text($k)) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
		update => "UPDATE $t SET v = '$v' WHERE id = $k",
		delete => "DELETE FROM $t WHERE id = $k");
	return write_with_commit_ts($node, $stmt{ $op->{kind} });
}

sub _set_link
{
	my ($node, $sub, $on) = @_;
	my $what = $on ? 'enable' : 'disable';
	$node->safe_psql('postgres', "SELECT concord.alter_subscription_$what('$sub->{name}')");
	return;
}

sub _build
{
	my ($topology, $node) = @_;
	if ($topology eq 'ring')
	{
		build_ring([ map { $node->{$_} } @NAMES ]);
	}
	else
	{
		foreach my $leaf (@NAMES[ 1 .. $#NAMES ])
		{
			subscribe($node->{$leaf}, $node->{n1}, forward_origins => ['all']);
			subscribe($node->{n1}, $node->{$leaf}, forward_origins => []);
		}
	}
	return;
}

# The round's history rows of one key, on every node.
sub rounds_key_history
{
	my ($nodes, $t, $k, $since) = @_;
	my $out = '';
	foreach my $n (@$nodes)
	{
		my $rows = $n->safe_psql('postgres', qq{
			SELECT conflict_id, subscription_name, conflict_type, resolver, resolution,
			       'local ' || coalesce(local_origin, '-') || ' ' || coalesce(local_row->>'v', '-') || ' \@'
			         || coalesce(((extract(epoch FROM local_commit_ts) * 1000000)::bigint)::text, '?'),
			       'remote ' || remote_origin || ' ' || coalesce(remote_row->>'v', '-') || ' \@'
			         || ((extract(epoch FROM remote_commit_ts) * 1000000)::bigint)::text,
			       'resolved ' || coalesce(resolved_row->>'v', '-')
			  FROM concord.conflict_history
			 WHERE relation = 'public.$t' AND key->>'id' = '$k' AND conflict_id > $since->{$n->name}
			 ORDER BY conflict_id});
		$out .= "      history on " . $n->name . ":\n" . join('', map { "        $_\n" } split /\n/, $rows);
	}
	return $out;
}

# Sets table $t (id, v, big = big_text(id)) to the expected rows on every
# node: resolver apply_remote for the table on every node, $writer writes
# the expected state of the wrong keys, everybody applies it, the
# resolver is set back to $resolver.  One assertion.
sub rounds_repair
{
	my ($nodes, $writer, $t, $keys, $expected, $resolver, $label) = @_;
	run_on_all($nodes, _resolver_sql($t, 'apply_remote'));
	my $sql = "BEGIN;\n";
	foreach my $k (@$keys)
	{
		my $v = $expected->{$k} // 'repair';
		$sql .= "INSERT INTO $t VALUES ($k, '$v', big_text($k)) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, big = EXCLUDED.big;\n";
		$sql .= "DELETE FROM $t WHERE id = $k;\n" unless defined $expected->{$k};
	}
	$writer->safe_psql('postgres', "${sql}COMMIT;");
	wait_for_apply_all($nodes, label => "$label: repair");
	run_on_all($nodes, _resolver_sql($t, $resolver));
	my $want = rounds_dump_from($expected);
	my $ok = 1;
	$ok &&= rounds_dump_of($_, $t) eq $want foreach @$nodes;
	ok($ok, "$label: $t repaired to the expected rows on every node (keys @$keys)")
	  or diag(join('', map { "--- " . $_->name . ":\n" . rounds_dump_of($_, $t) . "\n" } @$nodes));
	return;
}

# The statements of a round: [ { node, table, key, kind, v }, ... ].
sub _plan_ops
{
	my ($round, $mixed, $tables) = @_;
	my @groups;
	my @hot = (rounds_shuffle(1 .. $NKEYS))[ 0 .. 5 ];
	foreach my $nn (@NAMES)
	{
		foreach my $t (@$tables)
		{
			foreach (1 .. 6 + int(rand($mixed ? 14 : 6)))
			{
				my $k = rand() < 0.67 ? $hot[ int(rand(scalar @hot)) ] : 1 + int(rand($NKEYS));
				my $r = rand();
				my @kinds =
				    $mixed ? ($r < 0.5 ? 'update' : $r < 0.7 ? 'delete' : 'upsert')
				  : $r < 0.18 ? 'insert'
				  : $r < 0.38 ? 'upsert'
				  : $r < 0.60 ? 'update'
				  : $r < 0.88 ? 'delete'
				  :             ('delete', 'insert');
				push @groups, [ map { { node => $nn, table => $t, key => $k, kind => $_ } } @kinds ];
			}
		}
	}
	my @ops = map { @$_ } rounds_shuffle(@groups);
	my $seq = 0;
	foreach my $op (@ops)
	{
		$seq++;
		$op->{v} = "$op->{node} r$round #$seq" unless $op->{kind} eq 'delete';
	}
	return @ops;
}

# Per key, the expected value after the round.
sub _expected
{
	my ($t, $mixed, $writes, $before) = @_;
	my %expected;
	foreach my $k (1 .. $NKEYS)
	{
		my $ws = $writes->{$k};
		my $winner;
		if ($ws && $mixed)
		{
			foreach my $w (@$ws)
			{
				$winner = $w if !$winner || rounds_beats(\%PRIORITY, 'last_update_wins', $w, $winner);
			}
		}
		elsif ($ws)
		{
			my %last;
			$last{ $_->{node} } = $_ foreach @$ws;
			foreach my $nn (sort keys %last)
			{
				$winner = $last{$nn} if !$winner || rounds_beats(\%PRIORITY, $RESOLVER{$t}, $last{$nn}, $winner);
			}
		}
		$expected{$k} = $winner ? $winner->{v} : $before->{$k};
	}
	return \%expected;
}

=pod

=head1 concord_random_rounds(topology => 'ring' | 'star', rounds => N, mixed => M, seed => S)

Runs the rounds described at the top of this file: N rounds, M of them
mixed (never the first), with seed S (CONCORD_SEED overrides it; without
either, a random one).  Returns the number of wrong keys found.

=cut

sub concord_random_rounds
{
	my (%o) = @_;
	my $topology = $o{topology};
	my $seed =
	    ($ENV{CONCORD_SEED} // '') =~ /^\d+$/ ? $ENV{CONCORD_SEED}
	  : defined $o{seed} ? $o{seed}
	  :                    int(rand(1 << 30));
	diag("$topology: seed $seed (CONCORD_SEED=$seed replays it)");
	srand($seed);

	my %node;
	$node{$_} = concord_node($_, priority => $PRIORITY{$_}) foreach @NAMES;
	my @nodes = map { $node{$_} } @NAMES;
	run_on_all(\@nodes,
		q{CREATE FUNCTION big_text(i int) RETURNS text LANGUAGE sql IMMUTABLE
		      AS $$ SELECT string_agg(md5(i || ':' || g), '') FROM generate_series(1, 700) g $$;
}
		  . join('', map { "CREATE TABLE $_ (id int PRIMARY KEY, v text NOT NULL, big text);\n" } @TABLES)
		  . "CREATE TABLE t_mark (node text PRIMARY KEY, n int NOT NULL);\n"
		  . join('', map { _resolver_sql($_, $RESOLVER{$_}) } @TABLES));
	add_tables(\@nodes, [ @TABLES, 't_mark' ]);
	_build($topology, \%node);
	wait_replicating(\@nodes, "$topology built");
	wait_sync_complete(\@nodes);

	# Initial rows: about 60% of the keys, each written by a random node.
	my %state;
	foreach my $t (@TABLES)
	{
		foreach my $k (1 .. $NKEYS)
		{
			next unless rand() < 0.6;
			my $nn = $NAMES[ int(rand(scalar @NAMES)) ];
			$state{$t}{$k} = "$nn init $k";
			$node{$nn}->safe_psql('postgres', "INSERT INTO $t VALUES ($k, '$state{$t}{$k}', big_text($k))");
		}
	}
	wait_for_apply_all(\@nodes, label => 'initial rows');
	foreach my $t (@TABLES)
	{
		is(rounds_dump_of($_, $t), rounds_dump_from($state{$t}), "initial rows: $t on " . $_->name) foreach @nodes;
	}

	# Every node knows every node's priority, also those it hears of only
	# through another node (recorded without a DSN).
	$_->safe_psql('postgres', "INSERT INTO t_mark VALUES ('" . $_->name . "', 0)") foreach @nodes;
	wait_for_apply_all(\@nodes, label => 'first markers');
	foreach my $n (@nodes)
	{
		is( $n->safe_psql('postgres',
				q{SELECT string_agg(node_name || '=' || priority, ',' ORDER BY node_name)
				    FROM concord.node}),
			'n1=1,n2=4,n3=2,n4=3', $n->name . ': concord.node lists every node with its priority');
	}

	my %mixed;
	@mixed{ (rounds_shuffle(2 .. $o{rounds}))[ 0 .. $o{mixed} - 1 ] } = ();
	note('plan: mixed rounds ' . join(',', sort { $a <=> $b } keys %mixed));
	my @links = map { my $n = $_; map { [ $n, $_ ] } subscriptions_of($n) } @nodes;
	my %problems;
	my $wrong = 0;

	foreach my $round (1 .. $o{rounds})
	{
		my $label = "$topology round $round";
		my $mixed = exists $mixed{$round};

		foreach my $n (@nodes)
		{
			$n->safe_psql('postgres',
				"INSERT INTO t_mark VALUES ('" . $n->name . "', $round)
				 ON CONFLICT (node) DO UPDATE SET n = EXCLUDED.n");
		}
		wait_for_apply_all(\@nodes, label => "$label: markers");
		my %since = map {
			$_->name => $_->safe_psql('postgres',
				'SELECT coalesce(max(conflict_id), 0) FROM concord.conflict_history')
		} @nodes;

		my @round_tables = $mixed ? ('t_lww') : @TABLES;
		my %down;    # link index => 1 while cut
		if ($mixed)
		{
			foreach my $i (0 .. $#links)
			{
				next unless rand() < 0.4;
				_set_link(@{ $links[$i] }, 0);
				$down{$i} = 1;
			}
			note("$label: mixed (last_update_wins only), cut at the start: "
				  . (join(', ', map { $links[$_][1]{name} } sort keys %down) || 'none'));
		}
		else
		{
			partition_nodes(\@nodes, $label);
		}

		my @ops = _plan_ops($round, $mixed, \@round_tables);
		my %writes;    # {table}{key} = [ { node, kind, v, ts }, ... ]
		my %fuw_written;
		my ($nwrites, $toggles) = (0, 0);
		foreach my $op (@ops)
		{
			if ($mixed && rand() < 0.08)
			{
				# a link goes down, or comes back
				my $i = int(rand(scalar @links));
				_set_link(@{ $links[$i] }, $down{$i} ? 1 : 0);
				$down{$i} = !$down{$i};
				$toggles++;
			}
			next if $op->{table} eq 't_fuw' && $fuw_written{ $op->{node} }{ $op->{key} };
			my ($n, $ts) = _run_op($node{ $op->{node} }, $op);
			next unless $n > 0;
			$fuw_written{ $op->{node} }{ $op->{key} } = 1 if $op->{table} eq 't_fuw';
			die "no commit timestamp for a write of $op->{node}" unless defined $ts;
			push @{ $writes{ $op->{table} }{ $op->{key} } },
			  { node => $op->{node}, kind => $op->{kind}, v => $op->{v}, ts => $ts };
			$nwrites++;
		}
		note("$label: " . scalar(@ops) . " statements, $nwrites changed a row"
			  . ($mixed ? ", $toggles link changes" : ''));

		heal_nodes(\@nodes, "$label healed");

		foreach my $t (@round_tables)
		{
			my $expected = _expected($t, $mixed, $writes{$t} // {}, $state{$t});
			my $want = rounds_dump_from($expected);
			my %dump = map { $_->name => rounds_dump_of($_, $t) } @nodes;
			foreach my $n (@nodes)
			{
				is( $n->safe_psql('postgres',
						"SELECT string_agg(id::text, ',') FROM $t WHERE big IS DISTINCT FROM big_text(id)"),
					'', "$label: $t: every row on " . $n->name . ' has its large value, whole');
			}
			my $good = 1;
			foreach my $nn (@NAMES)
			{
				$good &&= is($dump{$nn}, $want,
					"$label: $t: $nn holds what $RESOLVER{$t} dictates ("
					  . ($mixed ? 'latest write' : "this round's versions") . ')');
			}
			$state{$t} = $expected;
			next if $good;

			my %holds = map { $_ => rounds_parse_dump($dump{$_}) } @NAMES;
			my @bad;
			my $report = "$label: $t ($RESOLVER{$t}), seed $seed, keys not as expected:\n";
			foreach my $k (1 .. $NKEYS)
			{
				my $e = $expected->{$k};
				next unless grep { ($holds{$_}{$k} // "\0") ne ($e // "\0") } @NAMES;
				push @bad, $k;
				my $ws = $writes{$t}{$k} // [];
				$report .= "  key $k: expected " . rounds_show($e) . "\n";
				foreach my $nn (@NAMES)
				{
					my @mine = grep { $_->{node} eq $nn } @$ws;
					$report .= "    $nn wrote: "
					  . (join(', ', map { "$_->{kind} " . rounds_show($_->{v}) . " \@$_->{ts}" } @mine) || 'nothing')
					  . "; holds " . rounds_show($holds{$nn}{$k}) . "\n";
				}
				$report .= rounds_key_history(\@nodes, $t, $k, \%since);
				$problems{ $RESOLVER{$t} . ($mixed ? ' (mixed)' : '') }++;
			}
			diag($report);
			$wrong += @bad;
			rounds_repair(\@nodes, $node{n1}, $t, \@bad, $expected, $RESOLVER{$t}, $label);
		}
	}

	foreach my $n (@nodes)
	{
		my $want = scalar subscriptions_of($n);
		is( $n->safe_psql('postgres',
				q{SELECT count(*) FILTER (WHERE status = 'replicating') FROM concord.subscription_status}),
			$want, $n->name . ": its $want subscription(s) replicating");
	}
	diag("seed $seed: wrong keys: " . join(', ', map { "$problems{$_} x $_" } sort keys %problems))
	  if %problems;
	$_->stop foreach @nodes;
	return $wrong;
}

1;
