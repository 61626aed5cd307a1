# A soak of conflicting writes under concurrency in a ring (or a star),
# the workload of the report in issue 17, checked against
# last_update_wins.  Not part of the test suite (it runs minutes); run it
# with the suite's harness:
#
#   CONCORD_SKIP_BUILD=1 CONCORD_LAYERS=tap CONCORD_TAP_TESTS=bench/ring_soak.pl \
#       bash scripts/test.sh
#
# Environment: SOAK_RUNS (default 5), SOAK_SECONDS (40), SOAK_TOPOLOGY
# (ring or star), CONCORD_SEED (the link schedule; printed).
#
# Each run: four fresh nodes n1..n4, in a ring n1 -> n2 -> n3 -> n4 -> n1
# (each subscribes to its predecessor, forward_origins '{all}'), or a star
# around n1; last_update_wins (the default); table t (id int PRIMARY KEY,
# v text, big text: a large value stored out of line, written only by an
# INSERT) with keys 1..100 written once by n1 and replicated.  Then, for
# SOAK_SECONDS, two pgbench clients per node run single-statement
# transactions on random keys: INSERT ... ON CONFLICT DO NOTHING, UPDATE,
# upsert, DELETE (a quarter each), while every 1-4 s a random link is
# disabled or enabled again.  Every statement that changed a row also
# records, in the same transaction, the key, its kind, the value and the
# transaction id in a table that is not replicated (wlog).  Then every
# link is enabled and everything applied.  Expected: per key, the write
# with the latest commit timestamp over all nodes (equal: the higher node
# name), or the initial row if nobody wrote the key; every node holds
# exactly that, and every row's large value is big_text(id).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../test/perl";
use ConcordTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $runs = $ENV{SOAK_RUNS} // 5;
my $seconds = $ENV{SOAK_SECONDS} // 40;
my $topology = $ENV{SOAK_TOPOLOGY} // 'ring';
my $seed = ($ENV{CONCORD_SEED} // '') =~ /^\d+$/ ? $ENV{CONCORD_SEED} : int(rand(1 << 30));
diag("ring_soak: $topology, $runs run(s) of $seconds s, seed $seed (CONCORD_SEED=$seed replays the link schedule)");
srand($seed);

my $NKEYS = 100;

sub workload_script
{
	my ($name) = @_;
	my $v = "'$name-' || pg_current_xact_id()";
	my $log = 'INSERT INTO wlog SELECT id, %s, v, pg_current_xact_id() FROM w';
	return <<"EOF";
\\set k random(1, $NKEYS)
\\set op random(1, 4)
\\if :op = 1
WITH w AS (INSERT INTO t VALUES (:k, $v, big_text(:k)) ON CONFLICT DO NOTHING RETURNING id, v) @{[ sprintf($log, "'insert'") ]};
\\elif :op = 2
WITH w AS (UPDATE t SET v = $v WHERE id = :k RETURNING id, v) @{[ sprintf($log, "'update'") ]};
\\elif :op = 3
WITH w AS (INSERT INTO t VALUES (:k, $v, big_text(:k)) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v RETURNING id, v) @{[ sprintf($log, "'upsert'") ]};
\\else
WITH w AS (DELETE FROM t WHERE id = :k RETURNING id, NULL::text AS v) @{[ sprintf($log, "'delete'") ]};
\\endif
EOF
}

sub one_run
{
	my ($run) = @_;
	my @nodes = concord_nodes(4, prefix => "r${run}n");
	my @names = map { $_->name } @nodes;
	run_on_all(\@nodes, qq{
CREATE FUNCTION big_text(i int) RETURNS text LANGUAGE sql IMMUTABLE
    AS \$\$ SELECT string_agg(md5(i || ':' || g), '') FROM generate_series(1, 300) g \$\$;
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, big text NOT NULL);
CREATE TABLE wlog (id int NOT NULL, kind text NOT NULL, v text, x xid8 NOT NULL);
});
	add_tables(\@nodes, ['t']);
	if ($topology eq 'star')
	{
		foreach my $leaf (@nodes[ 1 .. 3 ])
		{
			subscribe($leaf, $nodes[0], forward_origins => ['all']);
			subscribe($nodes[0], $leaf, forward_origins => []);
		}
	}
	else
	{
		build_ring(\@nodes);
	}
	wait_replicating(\@nodes, "run $run: $topology built");
	wait_sync_complete(\@nodes);
	$nodes[0]->safe_psql('postgres',
		"INSERT INTO t SELECT g, 'init ' || g, big_text(g) FROM generate_series(1, $NKEYS) g");
	wait_for_apply_all(\@nodes, label => "run $run: initial rows");

	# The load.
	my @bench;
	foreach my $n (@nodes)
	{
		my $file = $PostgreSQL::Test::Utils::tmp_check . '/soak_' . $n->name . '.sql';
		open(my $fh, '>', $file) or die "$file: $!";
		print $fh workload_script($n->name);
		close $fh;
		my ($out, $err) = ('', '');
		push @bench, {
			node => $n, out => \$out, err => \$err,
			h => IPC::Run::start(
				[ 'pgbench', '-n', '-c', '2', '-j', '2', '-T', $seconds, '-f', $file,
				  '-h', $n->host, '-p', $n->port, 'postgres' ],
				'>', \$out, '2>', \$err) };
	}
	my @links = map { my $n = $_; map { [ $n, $_ ] } subscriptions_of($n) } @nodes;
	my %down;
	my $until = time() + $seconds;
	my $toggles = 0;
	while (time() < $until)
	{
		sleep(1 + int(rand(4)));    # the schedule of the faults, not a wait for a state
		my $i = int(rand(scalar @links));
		my ($n, $s) = @{ $links[$i] };
		my $what = $down{$i} ? 'enable' : 'disable';
		$n->safe_psql('postgres', "SELECT concord.alter_subscription_$what('$s->{name}')");
		$down{$i} = !$down{$i};
		$toggles++;
	}
	foreach my $b (@bench)
	{
		$b->{h}->finish;
		my ($tps) = ${ $b->{out} } =~ /number of transactions actually processed: (\d+)/;
		ok(defined $tps && ${ $b->{err} } !~ /client \d+ aborted/,
			"run $run: pgbench on " . $b->{node}->name . ' ran to the end (' . ($tps // '?') . ' transactions)')
		  or diag(${ $b->{out} } . ${ $b->{err} });
	}
	note("run $run: $toggles link changes");
	heal_nodes(\@nodes, "run $run healed");

	# The oracle.
	my %winner;    # id => { ts, node, v, kind }
	foreach my $n (@nodes)
	{
		foreach my $line (split /\n/, $n->safe_psql('postgres', q{
				SELECT id, kind, coalesce(v, ''),
				       (extract(epoch FROM pg_xact_commit_timestamp(x::xid)) * 1000000)::bigint
				  FROM wlog}))
		{
			my ($id, $kind, $v, $ts) = split /\|/, $line;
			my $w = $winner{$id};
			next if $w && ($w->{ts} > $ts || ($w->{ts} == $ts && $w->{node} gt $n->name));
			$winner{$id} = { ts => $ts, node => $n->name, kind => $kind, v => $v };
		}
	}
	my %expected = map { $_ => "init $_" } 1 .. $NKEYS;
	foreach my $id (keys %winner)
	{
		$expected{$id} = $winner{$id}{kind} eq 'delete' ? undef : $winner{$id}{v};
	}
	my $want = join("\n", map { "$_|$expected{$_}" } grep { defined $expected{$_} } sort { $a <=> $b } keys %expected);
	my $wrong = 0;
	foreach my $n (@nodes)
	{
		my $got = $n->safe_psql('postgres', 'SELECT id, v FROM t ORDER BY id');
		my $ok = is($got, $want, "run $run: " . $n->name . ' holds the latest write of every key');
		if (!$ok)
		{
			my %holds = map { (split /\|/, $_, 2) } split /\n/, $got;
			foreach my $id (1 .. $NKEYS)
			{
				next if ($holds{$id} // "\0") eq ($expected{$id} // "\0");
				$wrong++;
				diag("run $run: key $id on " . $n->name . ': holds ' . ($holds{$id} // 'nothing')
					  . ', expected ' . ($expected{$id} // 'nothing'));
			}
		}
		is($n->safe_psql('postgres', 'SELECT count(*) FROM t WHERE big IS DISTINCT FROM big_text(id)'),
			'0', "run $run: every row on " . $n->name . ' has its large value');
	}
	note("run $run: " . scalar(keys %winner) . " keys written");
	$_->stop foreach @nodes;
	return $wrong;
}

my $diverged = 0;
foreach my $run (1 .. $runs)
{
	$diverged++ if one_run($run) > 0;
}
is($diverged, 0, "$topology: no run of $runs ended with a node off the latest writes");

done_testing();
