# concord.table_repair() (issue 13): the differences of a diff run mended
# through the resolver, on three nodes of a mesh.
#  1. Differences injected on single nodes (under an origin of their own,
#     which no node forwards): deleted, inserted, changed, NULL vs ''.
#     A dry run plans one write per key and node lacking the winner.
#  2. A key written normally between the diff and the repair keeps that
#     write everywhere (the repair finds the node's version changed:
#     "stale").
#  3. After the repair every node holds the same rows, a new diff is
#     clean, each injected key holds the last write (last_update_wins),
#     and a repaired row carries the winner's version (commit time and
#     origin) on every node, a repaired delete a tombstone of it.
#  4. Run again, the repair writes nothing ("already").
#  5. Refusals: a transaction block, a run that is not there, a caller
#     without DELETE, a resolver that does not converge without
#     source_node; with source_node, that node's rows win.
#  6. A node that cannot be reached ends the repair with an error naming
#     it; what was repaired stays repaired, and a new call finishes.
#  10. concord.repair_row() called by hand: refused in a subtransaction;
#      a session reset of the origin in the same statement does not take
#      the server down at commit.
#  11. A winner row that breaks another unique index here fails the
#      repair of that node with the error (it used to pass for "stale").
#  12. A caller under row-level security is refused.
#  13. With source_node, an absence with no tombstone is a delete dated
#      with the diff's fence: a write made after the diff on another node
#      wins over it everywhere (it used to be dated with the repair's
#      start, and lost on the nodes it reached after the delete).
#  14. The manager drops the repair origins no repair holds.
#  15. A key missing on rp3, updated on rp1 between the diff and the
#      repair: the UPDATE reaches rp3 first and finds no row (dropped,
#      update_missing); the repair then inserts the UPDATE's row, the
#      newest version, not the diff's winner (it inserted the older row,
#      and rp3 kept it for good).
#  16. A partitioned table: a row changed, one deleted (its tombstone in
#      the partition) and one inserted by hand are repaired through the
#      parent, and a new diff is clean.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(3, prefix => 'rp');
my ($n1, $n2, $n3) = @nodes;
setup_mesh(\@nodes, q{
	CREATE TABLE t (id int PRIMARY KEY, v text, n int);
	CREATE TABLE t2 (id int PRIMARY KEY, v text);
	CREATE TABLE t4 (id int PRIMARY KEY, email text UNIQUE);
	CREATE TABLE tp (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
	CREATE TABLE tp_eu PARTITION OF tp FOR VALUES IN ('eu');
	CREATE TABLE tp_us PARTITION OF tp FOR VALUES IN ('us');
	CREATE TYPE pair AS (a int, b text);
	CREATE TABLE t3 (id int PRIMARY KEY, ts timestamptz, iv interval, num numeric, f float8,
		b bytea, arr int[], j jsonb, m money, tx text[], d date, tm time, p pair,
		g int GENERATED ALWAYS AS (id * 2) STORED);},
	['t', 't2', 't3', 't4', 'tp']);
$n1->safe_psql('postgres', q{INSERT INTO t SELECT g, 'row ' || g, g FROM generate_series(1, 300) g;
	INSERT INTO t2 SELECT g, 'row ' || g FROM generate_series(1, 20) g;
	INSERT INTO t3 (id, ts) SELECT g, now() FROM generate_series(1, 5) g});
wait_for_apply_all(\@nodes, label => 'rows everywhere');

sub by_hand
{
	my ($node, @sql) = @_;
	$node->safe_psql('postgres', join(";\n",
		"SELECT pg_replication_origin_create('by_hand') WHERE NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = 'by_hand')",
		"SELECT pg_replication_origin_session_setup('by_hand')",
		@sql, "SELECT pg_replication_origin_session_reset()"));
}

sub diff_on
{
	my ($node, $table) = @_;
	my $id = $node->safe_psql('postgres', "SELECT concord.table_diff('$table')");
	my $status = $node->safe_psql('postgres', "SELECT concord.wait_for_diff($id, '5min')");
	return ($id, $status);
}

sub contents
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres',
		"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY id), '')) FROM $table x");
}

# 1. Injected differences.
by_hand($n2, 'DELETE FROM t WHERE id IN (1, 2, 3)');
by_hand($n3, q{INSERT INTO t VALUES (1001, 'only on rp3', 1), (1002, 'only on rp3', 2)});
by_hand($n1, q{UPDATE t SET v = 'changed on rp1' WHERE id IN (10, 11)});
by_hand($n2, q{UPDATE t SET v = NULL WHERE id = 20});
by_hand($n3, q{UPDATE t SET v = '' WHERE id = 21});
# the later write of key 30: on rp3, after rp2's
by_hand($n2, q{UPDATE t SET v = 'rp2 first' WHERE id = 30});
by_hand($n3, q{UPDATE t SET v = 'rp3 later' WHERE id = 30});
my ($id, $status) = diff_on($n1, 't');
is($status, 'divergent', 'the diff finds the injected differences');
is($n1->safe_psql('postgres', "SELECT string_agg(key->>'id', ',' ORDER BY (key->>'id')::int) FROM concord.diff_row WHERE run_id = $id"),
	'1,2,3,10,11,20,21,30,1001,1002', 'exactly the injected keys');

my $planned = $n1->safe_psql('postgres', "SELECT concord.table_repair($id, dry_run => true)");
# 1-3: rp2 lacks them (deleted by hand with a tombstone: the delete is the
# later write, so the others delete); 10, 11: rp2, rp3 update; 20: rp1, rp3
# take NULL; 21: rp1, rp2 take ''; 30: rp1, rp2 take rp3's; 1001, 1002:
# rp1, rp2 insert.
is($planned, 2 * 3 + 2 * 2 + 2 + 2 + 2 + 2 * 2, 'a dry run plans one write per key and node lacking the winner');
is($n1->safe_psql('postgres', qq{SELECT string_agg(node_name || ':' || (key->>'id') || ':' || action, ' ' ORDER BY (key->>'id')::int, node_name)
	FROM concord.repair_history WHERE run_id = $id AND dry_run}),
	'rp1:1:delete rp3:1:delete rp1:2:delete rp3:2:delete rp1:3:delete rp3:3:delete '
	. 'rp2:10:update rp3:10:update rp2:11:update rp3:11:update rp1:20:update rp3:20:update '
	. 'rp1:21:update rp2:21:update rp1:30:update rp2:30:update rp1:1001:insert rp2:1001:insert '
	. 'rp1:1002:insert rp2:1002:insert',
	'and records the plan in repair_history');
is($n1->safe_psql('postgres', "SELECT count(*) FROM t WHERE id IN (1, 2, 3)"), '3', 'a dry run writes nothing');

# 2. A write between the diff and the repair.
$n2->safe_psql('postgres', q{UPDATE t SET v = 'written after the diff' WHERE id = 11});
wait_for_apply_all(\@nodes, label => 'the later write everywhere');

# 5 (first part). Refusals.
my ($rc, $out, $err) = $n1->psql('postgres', "BEGIN; SELECT concord.table_repair($id); COMMIT;");
like($err, qr/cannot run inside a transaction block/, 'refused inside a transaction block');
($rc, $out, $err) = $n1->psql('postgres', "SELECT concord.table_repair(424242)");
like($err, qr/diff run 424242 does not exist/, 'refused for a run that is not there');
$n1->safe_psql('postgres', q{CREATE ROLE mender; GRANT USAGE ON SCHEMA concord TO mender;
	GRANT SELECT, INSERT, UPDATE ON t TO mender;
	GRANT EXECUTE ON FUNCTION concord.table_repair(bigint, name, boolean) TO mender});
($rc, $out, $err) = $n1->psql('postgres', "SET ROLE mender; SELECT concord.table_repair($id)");
like($err, qr/permission denied for table t/, 'refused to a role without DELETE on the table');
($rc, $out, $err) = $n1->psql('postgres', "SELECT concord.table_repair($id, source_node => 'nobody')");
like($err, qr/node "nobody" took no part in diff run/, 'refused for a source_node not in the run');

# 3. The repair.
my $sent = $n1->safe_psql('postgres', "SELECT concord.table_repair($id)");
is($sent, $planned, 'the repair sends what the dry run planned');
wait_for_apply_all(\@nodes, label => 'after the repair');
my %c = map { ($_->name => contents($_, 't')) } @nodes;
is($c{rp2}, $c{rp1}, 'rp2 holds what rp1 holds');
is($c{rp3}, $c{rp1}, 'rp3 holds what rp1 holds');
is($n2->safe_psql('postgres', q{SELECT count(*) FROM t WHERE id IN (1, 2, 3)}), '0', 'the later deletes won');
is($n3->safe_psql('postgres', q{SELECT string_agg(id || '=' || coalesce(v, 'NULL'), ',' ORDER BY id) FROM t WHERE id IN (10, 11, 20, 21, 30, 1001)}),
	'10=changed on rp1,11=written after the diff,20=NULL,21=,30=rp3 later,1001=only on rp3',
	'each key holds its last write; the write made after the diff stands');
is($n3->safe_psql('postgres', qq{SELECT action FROM concord.repair_history WHERE run_id = $id AND key->>'id' = '11'}),
	'stale', 'so did rp3');
is($n2->safe_psql('postgres', qq{SELECT action FROM concord.repair_history WHERE run_id = $id AND key->>'id' = '11'}),
	'stale', 'rp2 found key 11 written since the diff and left it');
is($n2->safe_psql('postgres', qq{SELECT string_agg((key->>'id') || ':' || action, ' ' ORDER BY (key->>'id')::int)
	FROM concord.repair_history WHERE run_id = $id}),
	'10:update 11:stale 21:update 30:update 1001:insert 1002:insert', 'rp2 records what it did');
my $version = q{SELECT (concord.row_version(xmin)).* FROM t WHERE id = %d};
for my $k (10, 30, 1001)
{
	my $want = ($k == 10 ? $n1 : $n3)->safe_psql('postgres', sprintf($version, $k));
	is($n2->safe_psql('postgres', sprintf($version, $k)), $want, "key $k on rp2 carries the winner's version");
	like($want, qr/\|by_hand$/, "key $k: the winner's origin is the by-hand one");
}
my $tomb = q{SELECT (concord.row_version(xmin)).* FROM concord.tombstone WHERE relid = 't'::regclass AND key = '{2}'};
is($n1->safe_psql('postgres', $tomb), $n2->safe_psql('postgres', $tomb), "key 2's tombstone on rp1 carries rp2's delete's version");
($id, $status) = diff_on($n3, 't');
is($status, 'clean', 'a new diff, from rp3, is clean');

# 4. Again: nothing to do.
my ($id1) = $n1->safe_psql('postgres', "SELECT max(run_id) FROM concord.diff_run WHERE status = 'divergent'");
my $before = $n1->safe_psql('postgres', 'SELECT clock_timestamp()');
is($n1->safe_psql('postgres', "SELECT concord.table_repair($id1)"), $sent, 'run again, it sends the same keys');
for my $n (@nodes)
{
	is($n->safe_psql('postgres', qq{SELECT string_agg(DISTINCT action, ',') FROM concord.repair_history
		WHERE run_id = $id1 AND repaired_at > '$before' AND key->>'id' <> '11'}),
		'already', $n->name . ' finds every key done');
}

# 5. A resolver that does not converge needs source_node.
run_on_all(\@nodes, q{SELECT concord.set_conflict_resolver('t2', 'keep_local')});
by_hand($n2, q{UPDATE t2 SET v = 'rp2 says' WHERE id = 5});
by_hand($n3, q{UPDATE t2 SET v = 'rp3 says' WHERE id = 5});
($id, $status) = diff_on($n1, 't2');
is($status, 'divergent', 't2 differs');
($rc, $out, $err) = $n1->psql('postgres', "SELECT concord.table_repair($id)");
like($err, qr/resolves conflicts with keep_local, which does not choose one version for every node/,
	'keep_local does not decide the winner');
like($err, qr/HINT:  Give source_node/, 'the hint says to give source_node');
is($n1->safe_psql('postgres', "SELECT concord.table_repair($id, source_node => 'rp2')"), '2', 'with source_node it repairs');
wait_for_apply_all(\@nodes, label => 't2 repaired');
is(join(',', map { $_->safe_psql('postgres', 'SELECT v FROM t2 WHERE id = 5') } @nodes),
	'rp2 says,rp2 says,rp2 says', "source_node's row wins everywhere");

# 6. A node that cannot be reached.
by_hand($n2, q{UPDATE t SET v = 'again on rp2' WHERE id IN (50, 51)});
by_hand($n3, q{UPDATE t SET v = 'again on rp3' WHERE id IN (60, 61)});
($id, $status) = diff_on($n1, 't');
is($status, 'divergent', 'new differences found');
$n3->stop('fast');
($rc, $out, $err) = $n1->psql('postgres', "SELECT concord.table_repair($id)");
like($err, qr/node "rp3": /, 'a node down ends the repair with an error naming it');
unlike($err, qr/password=/, 'with no password in it');
is($n2->safe_psql('postgres', q{SELECT count(*) FROM t WHERE v = 'again on rp3'}), '2', 'what rp2 received stays');
$n3->start;
wait_replicating(\@nodes, 'rp3 back');
is($n1->safe_psql('postgres', "SELECT concord.table_repair($id)"), '8', 'a new call sends every write again');
wait_for_apply_all(\@nodes, label => 'repaired at last');
is($n2->safe_psql('postgres', qq{SELECT string_agg((key->>'id') || ':' || action, ' ' ORDER BY (key->>'id')::int, repaired_at)
	FROM concord.repair_history WHERE run_id = $id}),
	'60:update 60:already 61:update 61:already',
	'rp2 found done what the first call did');
%c = map { ($_->name => contents($_, 't')) } @nodes;
is($c{rp2}, $c{rp1}, 'rp2 holds what rp1 holds');
is($c{rp3}, $c{rp1}, 'rp3 holds what rp1 holds');

# 7. Values of every kind read back as they were: the winner's row travels
# as jsonb made under pinned settings, read under the same.
by_hand($n2, q{SET TimeZone = 'Asia/Kolkata'; SET IntervalStyle = 'sql_standard'; SET DateStyle = 'SQL, DMY';
	UPDATE t3 SET ts = '2026-03-01 10:11:12.123456+05:30', iv = '-1 days +02:00:00.5', num = 3000.00,
		f = 1e-300, b = '\x00ff', arr = '{1,NULL,3}', j = '{"a": [1, 2.50], "b": null}', m = 12.34,
		tx = '{"a,b","c\"d",NULL}', d = '2026-02-28', tm = '23:59:59.999999', p = ROW(1, 'x,y')
	 WHERE id = 1;
	UPDATE t3 SET f = 'NaN', iv = '1 year 2 mons -3 days', num = 'NaN', p = ROW(NULL, '') WHERE id = 2});
($id, $status) = diff_on($n1, 't3');
is($status, 'divergent', 't3 differs');
is($n1->safe_psql('postgres', "SELECT concord.table_repair($id)"), '4', 'two rows, on two nodes each');
wait_for_apply_all(\@nodes, label => 't3 repaired');
%c = map { ($_->name => contents($_, 't3')) } @nodes;
is($c{rp1}, $c{rp2}, 'rp1 holds rp2\'s values exactly');
is($c{rp3}, $c{rp2}, 'and so does rp3');
($id, $status) = diff_on($n3, 't3');
is($status, 'clean', 'a new diff of t3 is clean');

# 8. Writers on every node touch the keys being repaired: when all is
# applied, every node holds the same rows, and each key the last write
# (by commit time, then node name: last_update_wins) of all writes.
by_hand($n2, q{UPDATE t SET v = 'by hand on rp2' WHERE id BETWEEN 100 AND 119});
by_hand($n3, q{DELETE FROM t WHERE id BETWEEN 120 AND 129});
by_hand($n1, q{INSERT INTO t SELECT g, 'by hand on rp1', g FROM generate_series(2000, 2009) g});
($id, $status) = diff_on($n1, 't');
is($status, 'divergent', 'the new differences are found');
is($n1->safe_psql('postgres', "SELECT differences FROM concord.diff_run WHERE run_id = $id"), '40', 'all 40 of them');
my @writers;
foreach my $n (@nodes)
{
	my $name = $n->name;
	$n->safe_psql('postgres', qq{
		CREATE TABLE wlog (k int, v text, x xid);	-- this node's own
		CREATE TABLE stop_writing (stop boolean);
		CREATE PROCEDURE write_rows() LANGUAGE plpgsql AS \$\$
		DECLARE
			i int := 0;
			k int;
			keys int[] := ARRAY(SELECT generate_series(100, 139) UNION ALL SELECT generate_series(2000, 2009));
		BEGIN
			LOOP
				EXIT WHEN EXISTS (SELECT FROM stop_writing);
				i := i + 1;
				k := keys[1 + (random() * 49)::int];
				UPDATE t SET v = 'w:$name:' || i WHERE id = k;
				IF FOUND THEN
					INSERT INTO wlog VALUES (k, 'w:$name:' || i, pg_current_xact_id()::text::xid);
				END IF;
				COMMIT;
				PERFORM pg_sleep(0.02);
			END LOOP;
		END \$\$;});
	push @writers, start_psql($n, "CALL write_rows();\n");
}
foreach my $n (@nodes)
{
	ok($n->poll_query_until('postgres', q{SELECT count(*) > 20 FROM wlog}), $n->name . ': the writers run');
}
my $queued = $n1->safe_psql('postgres', "SELECT concord.table_repair($id)");
ok($queued > 0, "the repair sends $queued writes while the writers run");
foreach my $n (@nodes)
{
	my $logged = $n->safe_psql('postgres', 'SELECT count(*) FROM wlog');
	ok($n->poll_query_until('postgres', "SELECT count(*) > $logged + 20 FROM wlog"), $n->name . ': the writers go on after it');
	$n->safe_psql('postgres', 'INSERT INTO stop_writing VALUES (true)');
}
finish_psql($_) foreach @writers;
wait_for_apply_all(\@nodes, label => 'writers and repair applied');
%c = map { ($_->name => contents($_, 't')) } @nodes;
is($c{rp2}, $c{rp1}, 'rp2 holds what rp1 holds');
is($c{rp3}, $c{rp1}, 'rp3 holds what rp1 holds');
my @log;
foreach my $n (@nodes)
{
	push @log, map { [ split /\|/, $_, -1 ] } split /\n/, $n->safe_psql('postgres',
		q{SELECT k, v, to_char(pg_xact_commit_timestamp(x), 'YYYYMMDDHH24MISSUS'), '} . $n->name . q{' FROM wlog});
}
my %last;
foreach my $w (@log)
{
	my ($k, $v, $ts, $node) = @$w;
	$last{$k} = $w if !$last{$k} || ($ts cmp $last{$k}[2] || $node cmp $last{$k}[3]) > 0;
}
my $held = $n2->safe_psql('postgres', q{SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM t
	WHERE id BETWEEN 100 AND 139 OR id BETWEEN 2000 AND 2009});
my %held = map { split /=/, $_, 2 } split /,/, $held;
my @wrong = grep { ($held{$_} // 'absent') ne $last{$_}[1] } sort { $a <=> $b } keys %last;
is(scalar(@wrong), 0, scalar(keys %last) . ' keys written during the repair hold their last write')
  or diag(join("\n", map { "key $_: holds " . ($held{$_} // 'absent') . ", last write $last{$_}[1]" } @wrong));
($id, $status) = diff_on($n2, 't');
is($status, 'clean', 'a new diff is clean');

# 9. A node's repair session killed in the middle of a key's write: the
# key is written there whole or not at all, with its record; a new call
# finishes.  A trigger that fires in replica role stops the write after
# its row changed, on an advisory lock held by another session.
by_hand($n1, q{UPDATE t SET v = 'to repair' WHERE id IN (200, 201, 202)});
($id, $status) = diff_on($n1, 't');
is($status, 'divergent', 'three keys to repair');
$n2->safe_psql('postgres', q{
	CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN IF NEW.id = 201 THEN PERFORM pg_advisory_lock(712); END IF; RETURN NEW; END $$;
	CREATE TRIGGER hold AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION hold();
	ALTER TABLE t ENABLE ALWAYS TRIGGER hold;});
my $holder = start_psql($n2, "SELECT pg_advisory_lock(712);\nSELECT pg_sleep(600);\n");
$n2->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 712 AND granted})
  or die 'the lock is not held';
my $repair = start_psql($n1, "SELECT concord.table_repair($id);\n");
$n2->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'concord repair' AND wait_event_type = 'Lock'})
  or die 'the repair does not wait';
my $pid = $n2->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE application_name = 'concord repair'});
kill 'KILL', $pid;
my ($repair_rc, $repair_out, $repair_err) = finish_psql($repair);
like($repair_err, qr/node "rp2": /, 'the repair ends with an error naming rp2');
finish_psql($holder);
restart_after_crash($n2);
$n2->safe_psql('postgres', 'DROP TRIGGER hold ON t');
wait_replicating(\@nodes, 'rp2 back');
is($n2->safe_psql('postgres', q{SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM t WHERE id IN (200, 201, 202)}),
	'200=to repair,201=row 201,202=row 202', 'on rp2 key 200 is repaired, 201 not at all');
is($n2->safe_psql('postgres', qq{SELECT string_agg((key->>'id') || ':' || action, ' ' ORDER BY key) FROM concord.repair_history WHERE run_id = $id}),
	'200:update', 'and only 200 is recorded');
is($n1->safe_psql('postgres', "SELECT concord.table_repair($id)"), '6', 'a new call sends the writes again');
wait_for_apply_all(\@nodes, label => 'the last repair');
%c = map { ($_->name => contents($_, 't')) } @nodes;
is($c{rp2}, $c{rp1}, 'rp2 holds what rp1 holds');
is($c{rp3}, $c{rp1}, 'rp3 holds what rp1 holds');

# 10. repair_row by hand.
my $state = q{SELECT jsonb_build_object('row', row_data, 'digest', digest, 'commit_time', commit_time,
	'origin_node', origin_node, 'deleted', deleted)
	FROM concord.table_digest_keys('t', NULL, '[{"id": 250}]')};
my $expected = $n1->safe_psql('postgres', $state);
my $winner = q[{"row": {"id": 250, "v": "by hand", "n": 250}, "digest": "x", "commit_time": "2026-01-01 00:00:00+00", "origin_node": "rp2", "deleted": false}];
my $call = "concord.repair_row('public.t', '{\"id\": 250}', '$expected', '$winner', 0, 'rp1')";
($rc, $out, $err) = $n1->psql('postgres', "DO \$\$ BEGIN BEGIN PERFORM $call; EXCEPTION WHEN division_by_zero THEN NULL; END; END \$\$");
like($err, qr/must run in a transaction of its own/, 'repair_row is refused in a subtransaction');
# A trigger of the table's (enabled ALWAYS, it fires in the repair's
# write) sets lock_timeout for the session: undone when the write ends,
# it does not stay in the caller's session (it did).
$n1->safe_psql('postgres', q{
	CREATE FUNCTION leak() RETURNS trigger LANGUAGE plpgsql AS
	$$BEGIN PERFORM set_config('lock_timeout', '7777', false); RETURN NEW; END$$;
	CREATE TRIGGER leak BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION leak();
	ALTER TABLE t ENABLE ALWAYS TRIGGER leak;});
($rc, $out, $err) = $n1->psql('postgres', "SELECT $call, pg_replication_origin_session_reset(); SHOW lock_timeout");
is($rc, 0, 'an origin reset in the same statement: the commit goes through') or diag($err);
is($n1->safe_psql('postgres', 'SELECT v FROM t WHERE id = 250'), 'by hand', 'and the row is written');
like($out, qr/\n0\z/, "what the table's trigger set is undone after the write");
$n1->safe_psql('postgres', q{DROP TRIGGER leak ON t; DROP FUNCTION leak();
	UPDATE t SET v = 'row 250' WHERE id = 250});

# 11. A unique index other than the key.
by_hand($n1, q{INSERT INTO t4 VALUES (6, 'dup@example.com')});
by_hand($n2, q{INSERT INTO t4 VALUES (5, 'dup@example.com')});
($id, $status) = diff_on($n3, 't4');
is($status, 'divergent', 't4 differs');
($rc, $out, $err) = $n3->psql('postgres', "SELECT concord.table_repair($id)");
like($err, qr/node "rp3": duplicate key value violates unique constraint "t4_email_key"/,
	'a winner that breaks another unique index here is an error naming the node');
by_hand($n1, q{DELETE FROM t4});
by_hand($n2, q{DELETE FROM t4});
by_hand($n3, q{DELETE FROM t4});

# 12. Row-level security.
$n1->safe_psql('postgres', q{CREATE ROLE limited; GRANT USAGE ON SCHEMA concord TO limited;
	GRANT SELECT, INSERT, UPDATE, DELETE ON t TO limited;
	GRANT EXECUTE ON FUNCTION concord.table_repair(bigint, name, boolean) TO limited;
	ALTER TABLE t ENABLE ROW LEVEL SECURITY;
	CREATE POLICY low ON t TO limited USING (id < 100);});
($rc, $out, $err) = $n1->psql('postgres', "SET ROLE limited; SELECT concord.table_repair($id1, dry_run => true)");
like($err, qr/table t has row-level security for this role/, 'a caller under row-level security is refused');
$n1->safe_psql('postgres', q{DROP POLICY low ON t; ALTER TABLE t DISABLE ROW LEVEL SECURITY});

# 13. source_node's absence with no tombstone, and a later write elsewhere.
by_hand($n2, 'SET session_replication_role = replica', 'DELETE FROM t WHERE id = 260');
($id, $status) = diff_on($n1, 't');
is($n1->safe_psql('postgres', "SELECT string_agg(key->>'id', ',') FROM concord.diff_row WHERE run_id = $id"),
	'260', 'key 260 is missing on rp2 only');
$n1->safe_psql('postgres', q{SELECT concord.alter_subscription_disable('sub_rp1_rp3')});
$n3->safe_psql('postgres', q{UPDATE t SET v = 'written on rp3 after the diff' WHERE id = 260});
is($n1->safe_psql('postgres', "SELECT concord.table_repair($id, source_node => 'rp2')"), '2',
	"rp2's absence is sent to rp1 and rp3");
is($n3->safe_psql('postgres', qq{SELECT action FROM concord.repair_history WHERE run_id = $id}), 'stale',
	'rp3 keeps its later write');
$n1->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_rp1_rp3')});
wait_replicating(\@nodes, 'rp1 receives from rp3 again');
wait_for_apply_all(\@nodes, label => "rp3's write everywhere");
is(join(',', map { $_->safe_psql('postgres', 'SELECT v FROM t WHERE id = 260') } ($n1, $n3)),
	'written on rp3 after the diff,written on rp3 after the diff',
	"the write made after the diff wins over the repair's delete on rp1 too");
# rp2 lacked the row with no tombstone: the update found nothing to update
# there (update_missing keeps the absence); a new repair brings it.
($id, $status) = diff_on($n1, 't');
$n1->safe_psql('postgres', "SELECT concord.table_repair($id)");
is($n2->safe_psql('postgres', 'SELECT v FROM t WHERE id = 260'), 'written on rp3 after the diff',
	'a new repair gives it to rp2');

# 14. Idle repair origins go.
ok($n2->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_replication_origin WHERE roname LIKE 'concord\_0%'}),
	'the manager drops the repair origins no repair holds');
%c = map { ($_->name => contents($_, 't')) } @nodes;
is($c{rp2}, $c{rp1}, 'at the end, rp2 holds what rp1 holds');
is($c{rp3}, $c{rp1}, 'and so does rp3');
is($n2->safe_psql('postgres', sprintf($version, 10)), $n1->safe_psql('postgres', sprintf($version, 10)),
	'a repaired row keeps its version once its origin is gone');

# 15. A write between the diff and the repair, to a key a node lacks.
by_hand($n1, q{INSERT INTO t VALUES (3001, 'inserted by hand on rp1', 1)});
($id, $status) = diff_on($n1, 't');
is($n1->safe_psql('postgres', "SELECT string_agg(key->>'id', ',') FROM concord.diff_row WHERE run_id = $id"),
	'3001', 'key 3001 is only on rp1');
$n1->safe_psql('postgres', q{UPDATE t SET v = 'updated on rp1 after the diff' WHERE id = 3001});
wait_for_apply_all(\@nodes, label => 'the update everywhere');
is($n3->safe_psql('postgres', q{SELECT count(*) FROM concord.conflict_history
	WHERE conflict_type = 'update_missing' AND key = '{"id": 3001}'}), '1', 'rp3 dropped the update: no row');
$n1->safe_psql('postgres', "SELECT concord.table_repair($id)");
is(join(',', map { $_->safe_psql('postgres', 'SELECT v FROM t WHERE id = 3001') } @nodes),
	'updated on rp1 after the diff,updated on rp1 after the diff,updated on rp1 after the diff',
	'every node holds the update made after the diff');
is($n3->safe_psql('postgres', sprintf($version, 3001)), $n1->safe_psql('postgres', sprintf($version, 3001)),
	"with rp1's version of it");

# 16. A partitioned table.
$n1->safe_psql('postgres', q{INSERT INTO tp SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'row ' || g
	FROM generate_series(1, 40) g});
wait_for_apply_all(\@nodes, label => 'tp everywhere');
by_hand($n2, q{UPDATE tp SET v = 'changed on rp2' WHERE id = 2}, q{DELETE FROM tp WHERE id = 3},
	q{INSERT INTO tp VALUES (41, 'eu', 'new on rp2')});
($id, $status) = diff_on($n1, 'tp');
is($n1->safe_psql('postgres', "SELECT string_agg((key->>'id') || ':' || kind, ',' ORDER BY (key->>'id')::int) FROM concord.diff_row WHERE run_id = $id"),
	'2:differs,3:extra,41:missing', 'the partitioned table differs in three keys');
is($n1->safe_psql('postgres', "SELECT concord.table_repair($id)"), '6', 'each on two nodes');
wait_for_apply_all(\@nodes, label => 'tp repaired');
%c = map { ($_->name => contents($_, 'tp')) } @nodes;
is($c{rp1}, $c{rp2}, "rp1 holds rp2's rows of tp");
is($c{rp3}, $c{rp2}, 'and so does rp3');
is($n3->safe_psql('postgres', q{SELECT count(*) FROM concord.tombstone WHERE relid = 'tp_us'::regclass AND key = '{3,us}'}),
	'1', "the repaired delete left its tombstone in the partition");
($id, $status) = diff_on($n3, 'tp');
is($status, 'clean', 'a new diff of tp is clean');

done_testing();
