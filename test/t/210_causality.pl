# Causality in a 3-node mesh (n1 = A, n2 = B, n3 = C).
#
# Part 1, a causally ordered chain: each step writes on one node, then
# waits until the two others applied it (concord.wait_for_apply), before
# the next step writes on another node: inserts, updates of rows last
# written by another node, deletes, re-inserts of deleted keys, an upsert,
# several updates of one row in one transaction, a key change, multi-row
# updates and deletes.  Pass criteria after every step: all nodes hold the
# same rows, and there is no row in concord.conflict_history on any node;
# at the end, the rows are the ones the chain dictates.
#
# Part 2, concurrent updates: rows written before the partition (by n3 and
# by n1), then every subscription disabled (no apply worker left), the
# same rows updated on n1 and on n2 in a random order per row, the commit
# timestamps read on the writers, and the subscriptions enabled again.
# Pass criteria: every node holds, for every row, the later update
# (last_update_wins; equal timestamps: n2, the higher name); n1 and n2
# each have exactly one update_origin_differs row per updated row, with
# complementary resolutions (keep_local on the node whose update won,
# apply_remote on the other); n3, which receives both updates, finds the
# second one concurrent with the first: exactly one update_origin_differs
# per row there too, apply_remote iff the second arrival is the winner;
# no other conflict row anywhere.
#
# Part 3, causal again after the conflicts: a chain of updates of the same
# rows through the three nodes adds no conflict row, and the nodes agree.
# Random order in part 2: the seed is printed; CONCORD_SEED=<n> replays it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seed = $ENV{CONCORD_SEED} // int(rand(1 << 30));
diag("210_causality: random seed $seed (CONCORD_SEED=$seed replays it)");
srand($seed);

my @nodes = concord_nodes(3);
my ($n1, $n2, $n3) = @nodes;
my %node = map { $_->name => $_ } @nodes;

setup_mesh(\@nodes, q{
	CREATE TABLE chain (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
}, ['chain']);

sub contents
{
	my ($n) = @_;
	return $n->safe_psql('postgres', 'SELECT id, v, n FROM chain ORDER BY id');
}

sub history_counts
{
	return join(',',
		map { $_->name . '=' . $_->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history') }
		  @nodes);
}

# --- part 1: a causal chain ----------------------------------------------------
my $step = 0;

sub chain_step
{
	my ($writer, $label, $sql) = @_;
	$step++;
	my $what = "chain step $step ($label on " . $writer->name . ')';
	$writer->safe_psql('postgres', $sql);
	my @failed = wait_applied_from(\@nodes, $writer);
	ok(!@failed, "$what: applied on the other nodes")
	  or diag('wait_for_apply false for: ' . join(', ', @failed) . "\n" . status_report(\@nodes));
	my $ref = contents($writer);
	my $same = 1;
	foreach my $n (@nodes)
	{
		$same &&= (contents($n) eq $ref);
	}
	ok($same, "$what: all nodes hold the same rows")
	  or diag(join("\n", map { '--- ' . $_->name . "\n" . contents($_) } @nodes));
	is(history_counts(), 'n1=0,n2=0,n3=0', "$what: no conflict row on any node")
	  or diag(join("\n", map { '--- ' . $_->name . "\n" . conflict_history_of($_) } @nodes));
	return;
}

chain_step($n1, 'insert', q{
	INSERT INTO chain VALUES (1, 'a1'), (2, 'a1'), (3, 'a1'), (4, 'a1');
});
chain_step($n2, 'update rows written by n1', q{
	UPDATE chain SET v = 'b2', n = n + 1 WHERE id IN (1, 2);
});
chain_step($n3, 'update a row written by n2, delete a row written by n1', q{
	UPDATE chain SET v = 'c3', n = n + 1 WHERE id = 1;
	DELETE FROM chain WHERE id = 3;
});
chain_step($n1, 'delete a row written by n3, update a row written by n2', q{
	DELETE FROM chain WHERE id = 1;
	UPDATE chain SET v = 'a4', n = n + 1 WHERE id = 2;
});
chain_step($n2, 're-insert keys deleted by n1 and n3', q{
	INSERT INTO chain VALUES (1, 'b5'), (3, 'b5');
});
chain_step($n3, 'upsert: an existing row written by n1 and a new one', q{
	INSERT INTO chain VALUES (2, 'c6'), (5, 'c6')
	    ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = chain.n + 1;
});
chain_step($n1, 'several updates of one row in one transaction', q{
	BEGIN;
	UPDATE chain SET v = 'a7', n = n + 1 WHERE id = 1;
	UPDATE chain SET v = 'a7b', n = n + 1 WHERE id = 1;
	UPDATE chain SET v = 'a7', n = n + 1 WHERE id = 3;
	COMMIT;
});
chain_step($n2, 'key change of a row written by n1', q{
	UPDATE chain SET id = 6, v = 'b8' WHERE id = 4;
});
chain_step($n3, 'update the moved row, delete a row written by n3', q{
	UPDATE chain SET v = 'c9', n = n + 1 WHERE id = 6;
	DELETE FROM chain WHERE id = 5;
});
chain_step($n1, 'multi-row update of rows from every node', q{
	UPDATE chain SET n = n + 10;
});
chain_step($n2, 'multi-row delete', q{
	DELETE FROM chain WHERE id IN (1, 2);
});
chain_step($n3, 'update after the delete', q{
	UPDATE chain SET v = v || '+c12', n = n + 1;
});

is(contents($n1), "3|a7+c12|12\n6|c9+c12|12", 'chain: n1 holds the rows the chain dictates');
checksums_match(\@nodes, ['chain'], 'chain');
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
		'0', 'chain: ' . $n->name . ' has zero rows in concord.conflict_history');
}

# --- part 2: concurrent updates on n1 and n2 -----------------------------------------
my @keys = (10, 11, 12, 13, 14, 15);
$n3->safe_psql('postgres', q{INSERT INTO chain VALUES (10, 'c'), (11, 'c'), (12, 'c')});
$n1->safe_psql('postgres', q{INSERT INTO chain VALUES (13, 'a'), (14, 'a'), (15, 'a')});
my @failed = (wait_applied_from(\@nodes, $n3), wait_applied_from(\@nodes, $n1));
ok(!@failed, 'part 2: the rows to update are everywhere before the partition')
  or diag(status_report(\@nodes));

partition_nodes(\@nodes, 'part 2');

# Per key, which node updates first: both orders among the keys.
my %first;
do
{
	%first = map { $_ => (rand() < 0.5 ? 'n1' : 'n2') } @keys;
} until (grep({ $_ eq 'n1' } values %first) && grep({ $_ eq 'n2' } values %first));

my %upd;    # {key}{node} = [v, ts]
foreach my $k (@keys)
{
	my @order = $first{$k} eq 'n1' ? qw(n1 n2) : qw(n2 n1);
	foreach my $nn (@order)
	{
		my $v = "$nn upd";
		my $ts = $node{$nn}->safe_psql('postgres',
			"UPDATE chain SET v = '$v', n = n + 1 WHERE id = $k;
			 SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint
			   FROM chain WHERE id = $k;");
		$upd{$k}{$nn} = [ $v, $ts ];
	}
}
note('first writer per key: ' . join(', ', map { "$_=$first{$_}" } @keys));

my %winner;
foreach my $k (@keys)
{
	my ($x, $y) = ($upd{$k}{n1}[1], $upd{$k}{n2}[1]);
	$winner{$k} = $x > $y ? 'n1' : 'n2';    # equal: n2, the higher name
}
note('winner per key: ' . join(', ', map { "$_=$winner{$_}" } @keys));
my $expected_rows = $n3->safe_psql('postgres', 'SELECT id, v, n FROM chain ORDER BY id');
{
	my @rows;
	foreach my $line (split /\n/, $expected_rows)
	{
		my ($id, $v, $n) = split /\|/, $line;
		($v, $n) = ($upd{$id}{ $winner{$id} }[0], $n + 1) if exists $upd{$id};
		push @rows, "$id|$v|$n";
	}
	$expected_rows = join("\n", @rows);
}

heal_nodes(\@nodes, 'part 2 healed');

foreach my $n (@nodes)
{
	is(contents($n), $expected_rows,
		'part 2: ' . $n->name . ' holds the later update of every row (last_update_wins)');
}

# n1 and n2: one update_origin_differs per key, complementary resolutions.
foreach my $nn (qw(n1 n2))
{
	my $o = $nn eq 'n1' ? 'n2' : 'n1';
	my $want = join("\n",
		map {
			join('|', $_, 'update_origin_differs', 'last_update_wins',
				($winner{$_} eq $nn ? 'keep_local' : 'apply_remote'),
				$nn, $upd{$_}{$nn}[1], $o, $upd{$_}{$o}[1], "sub_${nn}_$o",
				$upd{$_}{ $winner{$_} }[0])
		} @keys);
	is( $node{$nn}->safe_psql('postgres', q{
			SELECT key->>'id', conflict_type, resolver, resolution,
			       local_origin, (extract(epoch FROM local_commit_ts) * 1000000)::bigint,
			       remote_origin, (extract(epoch FROM remote_commit_ts) * 1000000)::bigint,
			       subscription_name, resolved_row->>'v'
			  FROM concord.conflict_history ORDER BY (key->>'id')::int, conflict_id}),
		$want,
		"part 2: $nn has exactly one update_origin_differs per row, resolved for the later update")
	  or diag(conflict_history_of($node{$nn}));
}

# n3: the second arrival of each key is concurrent with the first.
{
	my $got = $n3->safe_psql('postgres', q{
		SELECT key->>'id', conflict_type, resolver, local_origin, remote_origin, resolution,
		       resolved_row->>'v'
		  FROM concord.conflict_history ORDER BY (key->>'id')::int, conflict_id});
	my @lines = split /\n/, $got;
	my @bad;
	foreach my $k (@keys)
	{
		my @mine = grep { (split /\|/)[0] eq $k } @lines;
		if (@mine != 1)
		{
			push @bad, "key $k: " . scalar(@mine) . ' rows';
			next;
		}
		my (undef, $type, $resolver, $lo, $ro, $res, $resolved) = split /\|/, $mine[0];
		my $want_res = $ro eq $winner{$k} ? 'apply_remote' : 'keep_local';
		push @bad, "key $k: $mine[0] (want update_origin_differs, origins n1/n2, $want_res)"
		  unless $type eq 'update_origin_differs'
		  && $resolver eq 'last_update_wins'
		  && join(',', sort($lo, $ro)) eq 'n1,n2'
		  && $res eq $want_res
		  && $resolved eq $upd{$k}{ $winner{$k} }[0];
	}
	ok(!@bad && @lines == @keys,
		'part 2: n3 has exactly one update_origin_differs per row (the second arrival), resolved for the later update')
	  or diag(join("\n", @bad, 'n3 history:', conflict_history_of($n3)));
}

# --- part 3: causal again ----------------------------------------------------------
my %before = map { $_->name => $_->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history') } @nodes;
my $round = 0;
foreach my $writer ($n3, $n1, $n2, $n1)
{
	$round++;
	$writer->safe_psql('postgres',
		"UPDATE chain SET v = 'p3 r$round " . $writer->name . "', n = n + 1 WHERE id >= 10");
	my @f = wait_applied_from(\@nodes, $writer);
	ok(!@f, "part 3 round $round (" . $writer->name . '): applied on the other nodes')
	  or diag(status_report(\@nodes));
}
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
		$before{ $n->name },
		'part 3: ' . $n->name . ': causal updates after the conflicts add no conflict row')
	  or diag(conflict_history_of($n));
}
checksums_match(\@nodes, ['chain'], 'part 3');
is($n1->safe_psql('postgres', q{SELECT count(*) FROM chain WHERE id >= 10 AND v = 'p3 r4 n1'}),
	scalar @keys, 'part 3: the last update is everywhere');

$_->stop foreach @nodes;
done_testing();
