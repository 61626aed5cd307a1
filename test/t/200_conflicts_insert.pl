# insert_exists between two nodes, under last_update_wins (the default),
# first_update_wins and replica_priority.
#
# Two nodes n1 (priority 10) and n2 (priority 5) in a mesh.  The nodes are
# partitioned (every subscription disabled, no apply worker left), both
# insert the same keys of three tables (one per resolver) in a random
# interleaving, single-row transactions and one multi-row transaction per
# node, plus keys written on one node only; the commit timestamp of every
# row is read on its own node; then the subscriptions are enabled again.
# Pass criteria, once caught up:
#   - both nodes hold, for every key, the version the table's resolver
#     dictates, computed from the recorded commits:
#       last_update_wins : the later commit timestamp (tie: higher node name)
#       first_update_wins: the earlier one (same tie-break)
#       replica_priority : the higher node priority (n1), whatever the times
#     and every key written on one node only;
#   - every conflicting key has exactly one insert_exists row in
#     concord.conflict_history on each node, with the resolver's name,
#     complementary resolutions (apply_remote on the losing node, keep_local
#     on the winning one), both versions with their origins and commit
#     timestamps, and the resolved row; there is no other history row.
# Random interleaving: the seed is printed; CONCORD_SEED=<n> replays it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = $ENV{CONCORD_SEED} // int(rand(1 << 30));
diag("200_conflicts_insert: random seed $seed (CONCORD_SEED=$seed replays it)");
srand($seed);

my %priority = (n1 => 10, n2 => 5);
my $n1 = concord_node('n1', priority => $priority{n1});
my $n2 = concord_node('n2', priority => $priority{n2});
my @nodes = ($n1, $n2);
my %node = (n1 => $n1, n2 => $n2);
my %other = (n1 => 'n2', n2 => 'n1');

# table => resolver
my %resolver = (
	ins_luw  => 'last_update_wins',
	ins_fuw  => 'first_update_wins',
	ins_prio => 'replica_priority');
my @tables = sort keys %resolver;

setup_mesh(\@nodes,
	join('', map { "CREATE TABLE $_ (id int PRIMARY KEY, v text NOT NULL);\n" } @tables)
	  . "SELECT concord.set_conflict_resolver('ins_fuw', 'first_update_wins');\n"
	  . "SELECT concord.set_conflict_resolver('ins_prio', 'replica_priority');\n", \@tables);

is( $n1->safe_psql('postgres',
		q{SELECT string_agg(node_name || '=' || priority, ',' ORDER BY node_name) FROM concord.node}),
	'n1=10,n2=5', 'n1 knows both priorities');
is( $n2->safe_psql('postgres',
		q{SELECT string_agg(node_name || '=' || priority, ',' ORDER BY node_name) FROM concord.node}),
	'n1=10,n2=5', 'n2 knows both priorities');

# --- partition -------------------------------------------------------------
# Disable every subscription and wait until no apply worker runs anywhere.
partition_nodes(\@nodes, 'partitioned');

# --- concurrent inserts ------------------------------------------------------
# Keys 1..8 of each table on both nodes, in a random interleaving in which
# each table has keys first written on n1 and keys first written on n2.
my @ops;
while (1)
{
	@ops = ();
	foreach my $t (@tables)
	{
		foreach my $k (1 .. 8)
		{
			push @ops, [ $t, $k, $_ ] foreach qw(n1 n2);
		}
	}
	# Fisher-Yates
	for (my $i = $#ops; $i > 0; $i--)
	{
		my $j = int(rand($i + 1));
		@ops[ $i, $j ] = @ops[ $j, $i ];
	}
	my %first;
	foreach my $op (@ops)
	{
		$first{ $op->[0] }{ $op->[1] } //= $op->[2];
	}
	my $both = 1;
	foreach my $t (@tables)
	{
		my %seen = map { $_ => 1 } values %{ $first{$t} };
		$both &&= ($seen{n1} && $seen{n2});
	}
	last if $both;
}

my $seq = 0;
foreach my $op (@ops)
{
	my ($t, $k, $nn) = @$op;
	$seq++;
	$node{$nn}->safe_psql('postgres', "INSERT INTO $t VALUES ($k, '$nn k$k #$seq')");
}
# One multi-row transaction per node, in random order: keys 101..105 on n1,
# 103..108 on n2 (conflicts on 103..105).
my @batch = (rand() < 0.5) ? qw(n1 n2) : qw(n2 n1);
foreach my $nn (@batch)
{
	my ($lo, $hi) = $nn eq 'n1' ? (101, 105) : (103, 108);
	$seq++;
	$node{$nn}->safe_psql('postgres',
		"BEGIN;\n"
		  . join('',
			map { "INSERT INTO $_ SELECT g, '$nn batch k' || g || ' #$seq' FROM generate_series($lo, $hi) g;\n" }
			  @tables)
		  . "COMMIT;");
}
# Keys written on one node only: no conflict.
$n1->safe_psql('postgres', "INSERT INTO $_ VALUES (201, 'n1 alone')") foreach @tables;
$n2->safe_psql('postgres', "INSERT INTO $_ VALUES (202, 'n2 alone')") foreach @tables;
note('batch order: ' . join(' then ', @batch));

# Each node's versions, with their commit timestamps (microseconds since
# the epoch), read on the node that wrote them.
my %version;    # {table}{id}{node} = [v, ts]
foreach my $nn (qw(n1 n2))
{
	foreach my $t (@tables)
	{
		my $out = $node{$nn}->safe_psql('postgres',
			"SELECT id, v, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint
			   FROM $t ORDER BY id");
		foreach my $line (split /\n/, $out)
		{
			my ($id, $v, $ts) = split /\|/, $line;
			$version{$t}{$id}{$nn} = [ $v, $ts ];
		}
	}
}
is($n1->safe_psql('postgres', q{SELECT count(*) FROM ins_luw WHERE v LIKE 'n2%'}),
	'0', 'partitioned: n1 did not receive n2\'s rows');
is($n2->safe_psql('postgres', q{SELECT count(*) FROM ins_luw WHERE v LIKE 'n1%'}),
	'0', 'partitioned: n2 did not receive n1\'s rows');

# The winner of a conflicting key, by the table's resolver.
sub winner
{
	my ($t, $id) = @_;
	my $x = $version{$t}{$id}{n1};
	my $y = $version{$t}{$id}{n2};
	my $r = $resolver{$t};
	if ($r eq 'replica_priority' && $priority{n1} != $priority{n2})
	{
		return $priority{n1} > $priority{n2} ? 'n1' : 'n2';
	}
	return 'n2' if $x->[1] == $y->[1];    # tie: the higher node name
	if ($r eq 'first_update_wins')
	{
		return $x->[1] < $y->[1] ? 'n1' : 'n2';
	}
	return $x->[1] > $y->[1] ? 'n1' : 'n2';    # last_update_wins (and prio tie)
}

my (%expected_rows, %expected_history, %winners);
foreach my $t (@tables)
{
	my @rows;
	foreach my $id (sort { $a <=> $b } keys %{ $version{$t} })
	{
		my $vs = $version{$t}{$id};
		if ($vs->{n1} && $vs->{n2})
		{
			my $w = winner($t, $id);
			$winners{$t}{$w}++;
			push @rows, "$id|$vs->{$w}[0]";
			foreach my $nn (qw(n1 n2))
			{
				my $o = $other{$nn};
				push @{ $expected_history{$nn} },
				  join('|',
					"sub_${nn}_$o", "public.$t", $id, 'insert_exists', $resolver{$t},
					($w eq $nn ? 'keep_local' : 'apply_remote'),
					$nn, $vs->{$nn}[0], $vs->{$nn}[1],
					$o, $vs->{$o}[0], $vs->{$o}[1],
					$vs->{$w}[0]);
			}
		}
		else
		{
			my ($only) = keys %$vs;
			push @rows, "$id|$vs->{$only}[0]";
		}
	}
	$expected_rows{$t} = join("\n", @rows);
	note("$t ($resolver{$t}): winners "
		  . join(', ', map { "$_ x" . ($winners{$t}{$_} // 0) } qw(n1 n2)));
}
# The priority case is only meaningful if n1 wins some conflicts by
# priority that last_update_wins would give to n2 (and the other way round
# for the timestamp resolvers): the interleaving guarantees both orders.
cmp_ok($winners{ins_luw}{n1} // 0, '>', 0, 'last_update_wins: n1 has later keys');
cmp_ok($winners{ins_luw}{n2} // 0, '>', 0, 'last_update_wins: n2 has later keys');
cmp_ok($winners{ins_fuw}{n1} // 0, '>', 0, 'first_update_wins: n1 has earlier keys');
cmp_ok($winners{ins_fuw}{n2} // 0, '>', 0, 'first_update_wins: n2 has earlier keys');
my ($prio_earlier, $prio_later) = (0, 0);
foreach my $id (keys %{ $version{ins_prio} })
{
	my $vs = $version{ins_prio}{$id};
	next unless $vs->{n1} && $vs->{n2};
	$vs->{n1}[1] < $vs->{n2}[1] ? $prio_earlier++ : $prio_later++;
}
cmp_ok($prio_earlier, '>', 0,
	'replica_priority: some keys where n1 (higher priority) wrote first (last_update_wins would pick n2)');
cmp_ok($prio_later, '>', 0, 'replica_priority: some keys where n1 wrote last');

# --- heal --------------------------------------------------------------------
heal_nodes(\@nodes, 'healed');

foreach my $t (@tables)
{
	foreach my $n (@nodes)
	{
		is($n->safe_psql('postgres', "SELECT id, v FROM $t ORDER BY id"),
			$expected_rows{$t},
			"$t ($resolver{$t}): " . $n->name . ' holds the winner of every key');
	}
}
checksums_match(\@nodes, \@tables, 'healed');

# --- history -------------------------------------------------------------------
foreach my $n (@nodes)
{
	my $nn = $n->name;
	my @got = split /\n/, $n->safe_psql('postgres', q{
		SELECT subscription_name, relation, key->>'id', conflict_type, resolver, resolution,
		       local_origin, local_row->>'v',
		       (extract(epoch FROM local_commit_ts) * 1000000)::bigint,
		       remote_origin, remote_row->>'v',
		       (extract(epoch FROM remote_commit_ts) * 1000000)::bigint,
		       resolved_row->>'v'
		  FROM concord.conflict_history
		 ORDER BY relation, (key->>'id')::int, conflict_id});
	my @want = sort {
		my @x = split /\|/, $a;
		my @y = split /\|/, $b;
		$x[1] cmp $y[1] || $x[2] <=> $y[2]
	} @{ $expected_history{$nn} };
	is(scalar @got, scalar @want,
		"history: $nn has one row per conflicting key (" . scalar(@want) . ')');
	is_deeply(\@got, \@want,
		"history: $nn records each insert_exists with its resolver, resolution, both versions and the resolved row"
	) or diag("got:\n" . join("\n", @got) . "\nwant:\n" . join("\n", @want));
}

# Complementary resolutions: for every conflicting key, one node applied the
# remote row and the other kept its own.
my %res;
foreach my $n (@nodes)
{
	foreach my $line (split /\n/, $n->safe_psql('postgres',
			q{SELECT relation || ':' || (key->>'id'), resolution FROM concord.conflict_history}))
	{
		my ($k, $r) = split /\|/, $line;
		push @{ $res{$k} }, $r;
	}
}
my @bad = grep { join(',', sort @{ $res{$_} }) ne 'apply_remote,keep_local' } sort keys %res;
ok(!@bad && keys %res == @{ $expected_history{n1} },
	'history: every conflict has one apply_remote and one keep_local across the two nodes')
  or diag(join("\n", map { "$_: " . join(',', @{ $res{$_} }) } @bad));

foreach my $n (@nodes)
{
	is( $n->safe_psql('postgres',
			q{SELECT coalesce(sum(conflicts), 0) FROM concord.conflict_stats
			   WHERE conflict_type = 'insert_exists'}),
		scalar @{ $expected_history{ $n->name } },
		$n->name . ': conflict_stats counts the insert_exists conflicts');
}

$_->stop foreach @nodes;
done_testing();
