# Joining and leaving a live mesh: concord.join_mesh, part_mesh, drop_peer.
#
# A mesh n1, n2, n3 whose nodes keep writing throughout (a churn on each:
# inserts of new keys, updates and deletes of the keys the node owns, one
# transaction per step, so that no two nodes ever change the same row and
# any conflict row is the join's fault):
#   A. n4 joins through n1 with one call; all four end identical, with
#      every row written anywhere and no conflict row.
#   B. n4 writes, then parts under the churn: nothing it wrote is lost, no
#      subscription or slot refers to it anywhere, and the others go on.
#   C. n4, emptied, joins again; its sync worker is killed (kill -9) twice
#      in the middle of the copy (after the partitioned table's rows were
#      written, which the next attempt must empty), which takes the server down (no
#      restart_after_crash): restarted, the join resumes and ends
#      identical.
#   D. n5 tries to join with a set the members' subscriptions do not
#      carry, then while n3 is stopped: errors, nothing made anywhere;
#      with n3 back, the same call joins, and n2 is stopped during the
#      copy and started again: the join completes.
#   E. n5 is killed for good; drop_peer('n5') on the others removes what
#      refers to it, and the mesh goes on.
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
diag("600_join_mesh: random seed $seed (CONCORD_SEED=$seed replays it)");

my $lock = 6001;
my $ddl  = q{
	CREATE TABLE item (id bigint PRIMARY KEY, owner text NOT NULL, v int NOT NULL);
	CREATE TABLE bulk (id int PRIMARY KEY, t text);
	CREATE TABLE archive (id int PRIMARY KEY, t text) PARTITION BY RANGE (id);
	CREATE TABLE archive_1 PARTITION OF archive FOR VALUES FROM (0) TO (50000);
	CREATE TABLE archive_2 PARTITION OF archive FOR VALUES FROM (50000) TO (100000);
	-- One random change of this node's rows per transaction, until the
	-- advisory lock is free.
	CREATE PROCEDURE churn(seed float8, me text, base bigint)
	LANGUAGE plpgsql AS $$
	DECLARE
		i int := 0;
		k bigint;
		r float8;
	BEGIN
		PERFORM setseed(seed);
		WHILE NOT pg_try_advisory_lock(6001) LOOP
			i := i + 1;
			r := random();
			SELECT id INTO k FROM item WHERE owner = me
			 ORDER BY v, id LIMIT 1 OFFSET floor(random() * 20)::int;
			IF r < 0.45 OR k IS NULL THEN
				INSERT INTO item VALUES (base + i, me, 0);
			ELSIF r < 0.90 THEN
				UPDATE item SET v = v + 1 WHERE id = k;
			ELSE
				DELETE FROM item WHERE id = k;
			END IF;
			COMMIT;
		END LOOP;
		PERFORM pg_advisory_unlock(6001);
	END $$;
};

my @mesh = concord_nodes(3);
my ($n1, $n2, $n3) = @mesh;
setup_mesh(\@mesh, $ddl, [qw(item bulk archive)]);
$n1->safe_psql('postgres',
	"INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 200000) g;
	 INSERT INTO archive SELECT g, md5(g::text) FROM generate_series(1, 99999) g");
foreach my $i (0 .. 2)
{
	my $n = $mesh[$i];
	my $base = ($i + 1) * 10_000_000;
	$n->safe_psql('postgres',
		"INSERT INTO item SELECT $base + g, '" . $n->name . "', 0 FROM generate_series(1, 500) g");
}

my $round = 0;

# Starts a churn on each node; returns the handles.
sub start_churn
{
	my ($nodes) = @_;
	my @churns;
	$round++;
	foreach my $n (@$nodes)
	{
		my ($i) = $n->name =~ /(\d+)$/;
		my $holder = $n->background_psql('postgres');
		$holder->query_safe("SELECT pg_advisory_lock($lock)");
		my $s = sprintf('%.6f', (($seed + 7 * $i + 1000 * $round) % 1_000_000) / 1_000_000);
		my $base = $i * 10_000_000 + $round * 1_000_000;
		my $before = $n->safe_psql('postgres', 'SELECT count(*) FROM item');
		push @churns, { node => $n, holder => $holder,
			h => start_psql($n, "CALL churn($s, '" . $n->name . "', $base);\n") };
		# It runs: a row of its own appeared.
		$n->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM item WHERE id > $base AND id < $base + 1000000")
		  or die "the churn on " . $n->name . " does not run";
		note("churn on " . $n->name . " started ($before rows before)");
	}
	return \@churns;
}

sub stop_churn
{
	my ($churns, $label) = @_;
	my @bad;
	foreach my $c (@$churns)
	{
		$c->{holder}->query_safe("SELECT pg_advisory_unlock($lock)");
		my ($rc, undef, $stderr) = finish_psql($c->{h});
		push @bad, $c->{node}->name . ": $stderr" if $rc != 0;
		$c->{holder}->quit;
	}
	ok(!@bad, "$label: every churn ended without error") or diag(join("\n", @bad));
	return;
}

# The subscriptions of the nodes, by the catalog: (node, name, provider).
sub all_subscriptions
{
	my ($nodes) = @_;
	my %by_name = map { $_->name => $_ } @$nodes;
	my @subs;
	foreach my $n (@$nodes)
	{
		foreach my $row (split /\n/, $n->safe_psql('postgres',
			'SELECT subscription_name, provider_node FROM concord.subscription_status ORDER BY 1'))
		{
			my ($name, $prov) = split /\|/, $row;
			push @subs, [ $n, $name, $by_name{$prov} ];
		}
	}
	return @subs;
}

sub all_replicating
{
	my ($nodes, $want, $label) = @_;
	my $ok = 1;
	foreach my $n (@$nodes)
	{
		$ok &&= $n->poll_query_until('postgres',
			"SELECT count(*) = $want AND bool_and(status = 'replicating')
			   FROM concord.subscription_status");
	}
	ok($ok, "$label: every node has $want subscriptions, all replicating")
	  or diag(status_report($nodes));
	return $ok;
}

sub caught_up
{
	my ($nodes, $label) = @_;
	my @failed;
	foreach my $s (all_subscriptions($nodes))
	{
		my ($n, $name, $prov) = @$s;
		next unless $prov;
		push @failed, $n->name . ": $name"
		  unless wait_for_apply_one($n, $name, $prov);
	}
	ok(!@failed, "$label: every subscription caught up")
	  or diag(join("\n", @failed, status_report($nodes)));
	return;
}

sub same_everywhere
{
	my ($nodes, $label) = @_;
	my $sql = q{SELECT count(*), md5(string_agg(id || ':' || owner || ':' || v, ',' ORDER BY id))
	              FROM item};
	my $bulk = q{SELECT count(*), md5(string_agg(id || t, ',' ORDER BY id)) FROM bulk
	             UNION ALL SELECT count(*), md5(string_agg(id || t, ',' ORDER BY id)) FROM archive};
	my $want = $nodes->[0]->safe_psql('postgres', $sql);
	my $want_bulk = $nodes->[0]->safe_psql('postgres', $bulk);
	foreach my $n (@$nodes[ 1 .. $#$nodes ])
	{
		is($n->safe_psql('postgres', $sql), $want,
			"$label: " . $n->name . " holds the rows of " . $nodes->[0]->name);
		is($n->safe_psql('postgres', $bulk), $want_bulk,
			"$label: " . $n->name . " holds the bulk and partitioned tables");
	}
	foreach my $n (@$nodes)
	{
		is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
			'0', "$label: no conflict row on " . $n->name)
		  or diag($n->safe_psql('postgres',
			'SELECT conflict_type, subscription_name, key FROM concord.conflict_history LIMIT 5'));
	}
	return;
}

# Rows written by the churn on each node, for "nothing lost".
sub owned_rows
{
	my ($node, $owner) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) || ':' || coalesce(sum(v), 0) FROM item WHERE owner = '$owner'");
}

sub new_node
{
	my ($name) = @_;
	my $n = concord_node($name);
	$n->safe_psql('postgres', $ddl);
	add_tables([$n], [qw(item bulk archive)]);
	return $n;
}

sub join_through
{
	my ($n, $peer) = @_;
	return $n->safe_psql('postgres',
		"SELECT concord.join_mesh(" . quote_literal($peer->connstr('postgres')) . ")",
		timeout => $ConcordTest::TIMEOUT);
}

# --- A. n4 joins while the three write ---------------------------------------
my $n4 = new_node('n4');
my $churns = start_churn(\@mesh);
is(join_through($n4, $n1), '6', 'A: join_mesh made 6 subscriptions (3 here, 3 to here)');
all_replicating([ @mesh, $n4 ], 3, 'A');
# n4 writes too, once joined.
$n4->safe_psql('postgres',
	"INSERT INTO item SELECT 40000000 + g, 'n4', 0 FROM generate_series(1, 200) g");
stop_churn($churns, 'A');
caught_up([ @mesh, $n4 ], 'A');
same_everywhere([ @mesh, $n4 ], 'A');

# --- B. n4 writes, then parts under the churn --------------------------------
$churns = start_churn(\@mesh);
$n4->safe_psql('postgres', "UPDATE item SET v = v + 5 WHERE owner = 'n4' AND id % 2 = 0");
my $n4_rows = owned_rows($n4, 'n4');
is($n4->safe_psql('postgres', 'SELECT concord.part_mesh()', timeout => $ConcordTest::TIMEOUT),
	'3', 'B: part_mesh dropped the three subscriptions of n4');
stop_churn($churns, 'B');
all_replicating(\@mesh, 2, 'B');
caught_up(\@mesh, 'B');
same_everywhere(\@mesh, 'B');
is(owned_rows($n1, 'n4'), $n4_rows, 'B: every change n4 made before it parted reached the mesh');
is($n4->safe_psql('postgres', 'SELECT count(*) FROM concord.subscription_status'),
	'0', 'B: n4 subscribes to nobody');
foreach my $n (@mesh)
{
	is($n->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM concord.node WHERE node_name = 'n4')
		     + (SELECT count(*) FROM concord.subscription_status WHERE provider_node = 'n4')
		     || '/' || (SELECT count(*) FROM concord.departed_node WHERE node_name = 'n4')}),
		'0/1', 'B: ' . $n->name . ' forgot n4 and lists it as departed');
	is($n->safe_psql('postgres', q{
		SELECT count(*) FROM pg_replication_slots WHERE slot_name ~ '^concord_[0-9]+_[0-9]+$'
		   AND split_part(slot_name, '_', 2) NOT IN (SELECT node_id::text FROM concord.node)}),
		'0', 'B: no slot on ' . $n->name . ' is used by n4');
}
is($n4->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name ~ '^concord_[0-9]+_[0-9]+$'}),
	'0', 'B: no slot of a subscriber is left on n4');

# --- C. n4 joins again; its sync worker is killed twice mid-copy -------------
$n4->safe_psql('postgres', 'TRUNCATE item, bulk, archive');
$churns = start_churn(\@mesh);
is(join_through($n4, $n1), '6', 'C: join_mesh made 6 subscriptions again');
foreach my $kill (1, 2)
{
	my $pid;
	# The partitioned table is copied first (tables go by name): once
	# bulk is being copied, archive's partitions hold rows, which the
	# next attempt must empty first.
	$n4->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity
		   WHERE backend_type = 'concord sync' AND query = 'copying public.bulk'})
	  or die 'no sync worker copying bulk on n4';
	$pid = $n4->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'concord sync'});
	ok(kill('KILL', $pid), "C: sync worker killed mid-copy ($kill)");
	restart_after_crash($n4);
}
all_replicating([ @mesh, $n4 ], 3, 'C');
stop_churn($churns, 'C');
caught_up([ @mesh, $n4 ], 'C');
same_everywhere([ @mesh, $n4 ], 'C');

# --- D. n5 joins while n3 is stopped: nothing made; then it joins ------------
my $n5 = new_node('n5');
my ($rc, $out, $err) = $n5->psql('postgres',
	"SELECT concord.join_mesh(" . quote_literal($n1->connstr('postgres')) . ", '{default,extra}')");
like($err, qr/does not receive every replication set asked for/,
	'D: joining with a set the peer does not receive from the members is refused');
$n3->stop('immediate');
($rc, $out, $err) = $n5->psql('postgres',
	"SELECT concord.join_mesh(" . quote_literal($n1->connstr('postgres')) . ")");
isnt($rc, 0, 'D: join_mesh fails while a member is down');
like($err, qr/could not connect|connection/, 'D: the error says a member cannot be reached')
  or diag($err);
is($n5->safe_psql('postgres', 'SELECT count(*) FROM concord.subscription_status'),
	'0', 'D: n5 subscribes to nobody');
foreach my $n ($n1, $n2, $n4)
{
	is($n->safe_psql('postgres',
		"SELECT count(*) FROM concord.subscription_status WHERE provider_node = 'n5'"),
		'0', 'D: ' . $n->name . ' does not subscribe to n5');
}
$n3->start;
all_replicating([ @mesh, $n4 ], 3, 'D, n3 back');
$churns = start_churn([ $n1, $n4 ]);
is(join_through($n5, $n1), '8', 'D: join_mesh made 8 subscriptions');
# A member goes down during the join: the copy from n1 goes on, n5's
# subscription to n2 waits for n2, and streams once it is back.
$n2->stop('immediate');
$n5->safe_psql('postgres', "SELECT concord.wait_for_subscription_sync_complete('n5_from_n1')",
	timeout => $ConcordTest::TIMEOUT);
$n2->start;
all_replicating([ @mesh, $n4, $n5 ], 4, 'D');
stop_churn($churns, 'D');
caught_up([ @mesh, $n4, $n5 ], 'D');
same_everywhere([ @mesh, $n4, $n5 ], 'D');

# --- E. n5 is lost for good; drop_peer on the others -------------------------
$n5->stop('immediate');
foreach my $n (@mesh, $n4)
{
	is($n->safe_psql('postgres', "SELECT concord.drop_peer('n5')"), 't',
		'E: drop_peer(n5) on ' . $n->name);
	is($n->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM concord.subscription_status WHERE provider_node = 'n5')
		     + (SELECT count(*) FROM pg_replication_slots WHERE slot_name ~ '^concord_[0-9]+_[0-9]+$'
		          AND split_part(slot_name, '_', 2) NOT IN (SELECT node_id::text FROM concord.node))}),
		'0', 'E: nothing on ' . $n->name . ' refers to n5');
}
$churns = start_churn(\@mesh);
stop_churn($churns, 'E');
all_replicating([ @mesh, $n4 ], 3, 'E');
caught_up([ @mesh, $n4 ], 'E');
same_everywhere([ @mesh, $n4 ], 'E');

done_testing();
