# concord.alter_subscription_repair() (issue 13): a subscription whose slot
# was invalidated (max_slot_wal_keep_size exceeded) is recovered with one
# call while both nodes keep writing, and nothing is lost on either side.
#  1. sr2's subscription to sr1 is disabled while writers run on both
#     nodes (updates, inserts, deletes), and sr1 writes enough WAL that
#     its slot for sr2 is lost; enabled again, the subscription is down.
#  2. Refusals: in a transaction block; a subscription whose slot is fine;
#     a caller that may not write the table (before anything is done: the
#     slot stays lost).
#  3. alter_subscription_repair() on sr2, the writers going on: a new
#     slot, then the table compared with sr1 and repaired. Once the
#     writers stopped and all is applied, both nodes hold the same rows,
#     and each key the last of all writes made to it on either node
#     (last_update_wins), the writes of the lost stretch included.
#  4. Its record in concord.subscription_repair.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(2, prefix => 'sr',
	extra_conf => "max_slot_wal_keep_size = 48MB\nmax_wal_size = 64MB\nmin_wal_size = 32MB");
my ($n1, $n2) = @nodes;
setup_mesh(\@nodes, q{
	CREATE TABLE t (id int PRIMARY KEY, v text, n int);
	CREATE TABLE filler (x text);},
	['t']);
$n1->safe_psql('postgres', q{INSERT INTO t SELECT g, 'row ' || g, 0 FROM generate_series(1, 200) g;
	INSERT INTO t SELECT g, 'quiet', 0 FROM generate_series(600, 610) g});
wait_for_apply_all(\@nodes, label => 'rows everywhere');

# Writers: updates of keys 1..200 on both nodes, inserts of keys of their
# own, deletes of keys 150..200 on sr1; each logs what it wrote, with its
# transaction, in a table of its node's own.
my @writers;
foreach my $n (@nodes)
{
	my $name = $n->name;
	my $base = $name eq 'sr1' ? 1000 : 5000;
	my $deletes = $name eq 'sr1' ? 'true' : 'false';
	$n->safe_psql('postgres', qq{
		CREATE TABLE wlog (k int, v text, x xid);
		CREATE TABLE stop_writing (stop boolean);
		CREATE PROCEDURE write_rows() LANGUAGE plpgsql AS \$\$
		DECLARE
			i int := 0;
			k int;
		BEGIN
			LOOP
				EXIT WHEN EXISTS (SELECT FROM stop_writing);
				i := i + 1;
				IF i % 10 = 0 THEN
					INSERT INTO t VALUES ($base + i, 'new on $name', i);
					INSERT INTO wlog VALUES ($base + i, 'new on $name', pg_current_xact_id()::text::xid);
				ELSIF i % 10 = 5 AND $deletes THEN
					k := 150 + (random() * 50)::int;
					DELETE FROM t WHERE id = k;
					IF FOUND THEN
						INSERT INTO wlog VALUES (k, NULL, pg_current_xact_id()::text::xid);
					END IF;
				ELSE
					k := 1 + (random() * 199)::int;
					UPDATE t SET v = 'w:$name:' || i, n = i WHERE id = k;
					IF FOUND THEN
						INSERT INTO wlog VALUES (k, 'w:$name:' || i, pg_current_xact_id()::text::xid);
					END IF;
				END IF;
				COMMIT;
				PERFORM pg_sleep(0.01);
			END LOOP;
		END \$\$;});
	push @writers, start_psql($n, "CALL write_rows();\n");
}
foreach my $n (@nodes)
{
	ok($n->poll_query_until('postgres', q{SELECT count(*) > 20 FROM wlog}), $n->name . ': the writers run');
}

# 1. The slot is lost.
$n2->safe_psql('postgres', q{SELECT concord.alter_subscription_disable('sub_sr2_sr1')});
# Writes of the stretch the slot will lose, on keys no writer touches: sr1
# updates 600, inserts 620, deletes 601 and updates 602, and sr2 updates
# 602 after it (a local write that wins).
$n1->safe_psql('postgres', q{UPDATE t SET v = 'sr1 in the gap' WHERE id = 600;
	INSERT INTO t VALUES (620, 'sr1 in the gap', 0); DELETE FROM t WHERE id = 601;
	UPDATE t SET v = 'sr1 first' WHERE id = 602});
$n2->safe_psql('postgres', q{UPDATE t SET v = 'sr2 later' WHERE id = 602});
my $slot = $n2->safe_psql('postgres', q{SELECT slot_name FROM concord.subscription WHERE sub_name = 'sub_sr2_sr1'});
my $lost = 0;
foreach my $round (1 .. 20)
{
	$n1->safe_psql('postgres', q{INSERT INTO filler SELECT repeat(md5(g::text), 30) FROM generate_series(1, 20000) g;
		SELECT pg_switch_wal(); CHECKPOINT;});
	$lost = $n1->safe_psql('postgres', "SELECT wal_status = 'lost' FROM pg_replication_slots WHERE slot_name = '$slot'") eq 't';
	last if $lost;
}
ok($lost, "sr1's slot for sr2 is lost");
$n2->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_sr2_sr1')});
ok($n2->poll_query_until('postgres', q{SELECT status = 'down' AND last_error LIKE '%slot%'
	FROM concord.subscription_status WHERE subscription_name = 'sub_sr2_sr1'}),
	'enabled again, the subscription is down with an error about its slot')
  or diag($n2->safe_psql('postgres', 'SELECT * FROM concord.subscription_status'));

# 2. Refusals.
my ($rc, $out, $err) = $n2->psql('postgres', q{BEGIN; SELECT concord.alter_subscription_repair('sub_sr2_sr1'); COMMIT;});
like($err, qr/cannot run inside a transaction block/, 'refused inside a transaction block');
($rc, $out, $err) = $n1->psql('postgres', q{SELECT concord.alter_subscription_repair('sub_sr1_sr2')});
like($err, qr/the slot of subscription "sub_sr1_sr2" is not lost \(its wal_status on the provider is "reserved"\): the subscription can resume/,
	'refused for a subscription whose slot is fine');
is($n1->safe_psql('postgres', q{SELECT status FROM concord.subscription_status WHERE subscription_name = 'sub_sr1_sr2'}),
	'replicating', 'which goes on replicating');
$n2->safe_psql('postgres', q{CREATE ROLE reader; GRANT USAGE ON SCHEMA concord TO reader; GRANT SELECT ON t TO reader;
	GRANT EXECUTE ON FUNCTION concord.alter_subscription_repair(name) TO reader});
($rc, $out, $err) = $n2->psql('postgres', q{SET ROLE reader; SELECT concord.alter_subscription_repair('sub_sr2_sr1')});
like($err, qr/permission denied for table t/, 'refused to a role that may not write the table');
is($n1->safe_psql('postgres', "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$slot'"), 'lost',
	'before it touched the slot');

# 3. The recovery, with the writers going on.
my $sent = $n2->safe_psql('postgres', q{SELECT concord.alter_subscription_repair('sub_sr2_sr1')});
ok($sent > 0, "the repair sent $sent row writes");
is($n2->safe_psql('postgres', q{SELECT status FROM concord.subscription_status WHERE subscription_name = 'sub_sr2_sr1'}),
	'replicating', 'the subscription replicates again');
foreach my $n (@nodes)
{
	my $logged = $n->safe_psql('postgres', 'SELECT count(*) FROM wlog');
	ok($n->poll_query_until('postgres', "SELECT count(*) > $logged + 20 FROM wlog"), $n->name . ': the writers go on after it');
	$n->safe_psql('postgres', 'INSERT INTO stop_writing VALUES (true)');
}
finish_psql($_) foreach @writers;
wait_for_apply_all(\@nodes, label => 'everything applied');
my $contents = q{SELECT md5(string_agg(x::text, '|' ORDER BY id)) FROM t x};
is($n2->safe_psql('postgres', $contents), $n1->safe_psql('postgres', $contents), 'both nodes hold the same rows');

my $quiet = q{SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM t WHERE id BETWEEN 600 AND 620};
is($n2->safe_psql('postgres', $quiet), '600=sr1 in the gap,602=sr2 later,603=quiet,604=quiet,605=quiet,606=quiet,607=quiet,608=quiet,609=quiet,610=quiet,620=sr1 in the gap',
	"sr2 holds sr1's writes of the lost stretch, and its own later write");
is($n1->safe_psql('postgres', $quiet), $n2->safe_psql('postgres', $quiet), 'and so does sr1');
my %last;
foreach my $n (@nodes)
{
	foreach my $line (split /\n/, $n->safe_psql('postgres',
		q{SELECT k, coalesce(v, '<deleted>'), to_char(pg_xact_commit_timestamp(x), 'YYYYMMDDHH24MISSUS') FROM wlog}))
	{
		my ($k, $v, $ts) = split /\|/, $line, -1;
		my $node = $n->name;
		$last{$k} = [ $v, $ts, $node ]
		  if !$last{$k} || ($ts cmp $last{$k}[1] || $node cmp $last{$k}[2]) > 0;
	}
}
my %held = map { split /\|/, $_, 2 } split /\n/, $n2->safe_psql('postgres', 'SELECT id, v FROM t');
my @wrong = grep { ($held{$_} // '<deleted>') ne $last{$_}[0] } sort { $a <=> $b } keys %last;
is(scalar(@wrong), 0, scalar(keys %last) . ' keys written on either node hold their last write')
  or diag(join("\n", map { "key $_: holds " . ($held{$_} // '<deleted>') . ", last write $last{$_}[0] on $last{$_}[2]" } @wrong[0 .. ($#wrong > 9 ? 9 : $#wrong)]));
my $started = $n2->safe_psql('postgres', q{SELECT started_at FROM concord.subscription_repair WHERE status = 'done'});
my $lost_writes = $n1->safe_psql('postgres', "SELECT count(*) FROM wlog WHERE pg_xact_commit_timestamp(x) < '$started'");
diag("sr1 logged $lost_writes writes before the repair started");

# 4. The record.
is($n2->safe_psql('postgres', q{SELECT status, slot_lsn IS NOT NULL, cardinality(run_ids), rows_sent, error IS NULL, skipped
	FROM concord.subscription_repair WHERE status = 'done'}), "done|t|1|$sent|t|{}", 'the call is recorded, with its diff run');
my $run = $n2->safe_psql('postgres', q{SELECT run_ids[1] FROM concord.subscription_repair WHERE status = 'done'});
is($n2->safe_psql('postgres', "SELECT nodes FROM concord.diff_run WHERE run_id = $run"), '{sr2,sr1}',
	'the diff compared sr2 with its provider');
my ($id) = $n2->safe_psql('postgres', q{SELECT concord.table_diff('t')});
is($n2->safe_psql('postgres', "SELECT concord.wait_for_diff($id, '5min')"), 'clean', 'a new diff is clean');

done_testing();
