# Large (out-of-line) values in conflicts (issue 16, SPEC §5): a DELETE
# racing an UPDATE of another column, which leaves the large value
# unchanged, converges to the winner's full row on both nodes, under every
# convergent resolver, with text, jsonb and bytea values, REPLICA IDENTITY
# DEFAULT and FULL; the history and handlers never see NULL for the value.
#
# Two nodes, n1 (priority 1) and n2 (priority 5), in a mesh.  Tables
# (id int PRIMARY KEY, n int, big <type>), big about 11-22 kB, stored out
# of line (checked: pg_column_size above what a page holds inline):
#   lv_text, lv_json, lv_bytea      last_update_wins, REPLICA IDENTITY DEFAULT
#   lvf_text, lvf_json, lvf_bytea   last_update_wins, REPLICA IDENTITY FULL
#   lv_fuw                          first_update_wins
#   lv_prio                         replica_priority (n2 always wins)
#
# The race, two rounds: rows base+1 .. base+8 written on n1 and
# replicated; every subscription disabled; then per table, one
# transaction each ("update" sets n = n + 1 and leaves big unchanged,
# "bigupdate" replaces big):
#   row 1: n2 deletes, n1 updates;     row 2: n1 updates, n2 deletes;
#   row 3: n1 deletes, n2 updates;     row 4: n2 updates, n1 deletes;
#   row 5: n2 bigupdates, n1 updates;  row 6: n1 updates, n2 bigupdates;
#   row 7: n1 updates (no race);       row 8: untouched.
# Healing delivers one direction first, then the other: round 1 n1's
# changes to n2 first, round 2 n2's to n1 first (both arrival orders).
# Pass criteria per table and node: the rows the resolver dictates (an
# UPDATE that wins holds its n and the large value it left unchanged,
# byte for byte: md5 compared; a DELETE that wins leaves nothing); no
# NULL large value anywhere; every update_* history row's remote_row holds
# the large value it carried (the original or the replaced one) or, only
# when the remote UPDATE lost under REPLICA IDENTITY DEFAULT, the marker
# {"concord_unchanged": true}; a winner's resolved_row holds the value;
# the history key of REPLICA IDENTITY FULL tables is {"id": ...} only; no
# skip without a message.
#
# Then, in one more partition, one table each:
#   lv_merge  a custom handler for update_origin_differs that merges
#             (greatest n, greatest large value): n2 replaces big of row
#             1, n1 updates its n later; both nodes end with the merge;
#   lv_skip   resolver skip for update_deleted: n2 deletes row 1, n1
#             updates it later; n2 records skip with the whole remote row,
#             and concord.conflict_reapply() brings it back, large value
#             included, on both nodes;
#   lv_gone   n2 deletes row 1, n1 updates it later and then deletes it:
#             n2 cannot read the value from n1 (no row there any more),
#             records skip with a message naming the column and why, and
#             both nodes end without the row;
#   lv_locked n2 deletes row 1, n1 updates it later, and holds an ACCESS
#             EXCLUSIVE lock on the table (a prepared transaction): n2's
#             read gets no answer; with concord.receive_timeout = 5s its
#             subscription is down saying so, nothing is written; once
#             the lock is gone both nodes hold the updated row;
#   lv_extra  with a column note NOT NULL DEFAULT that n1 does not ship
#             (column list): n2 deletes row 1, n1 updates it later; n2
#             brings the row back with its large value and note's default;
#   lv_moved  n2 replaces big of row 1, n1 updates n later and then moves
#             the row to key 101: n2 cannot read n1's value under key 1,
#             deletes its own (losing) row with the UPDATE's version, and
#             then applies the move from its tombstone, reading the value
#             under the new key: both nodes hold 101 with n1's row;
#   lv_noperm in its own set, which n2 subscribes to as a role that
#             loses SELECT on the table on n1 after the copy: n2 deletes
#             row 1, n1 updates it later; n2's subscription is down with
#             an error that names the column and the fix, nothing is
#             written; once SELECT is granted again it applies and both
#             nodes hold the updated row.
# An UPDATE that moves a row into a row filter arrives as an INSERT
# lacking the large value: read from the provider (or, the row gone
# there, a WARNING and the later DELETE settles it).
# conflict_reapply() of a keep_local change with the marker: an UPDATE
# (the row is there) leaves the large value as it is; an INSERT (the row
# is gone) is refused with a message that names the column.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my %priority = (n1 => 1, n2 => 5);
my $n1 = concord_node('n1', priority => $priority{n1}, extra_conf => 'max_prepared_transactions = 2');
my $n2 = concord_node('n2', priority => $priority{n2});
my @nodes = ($n1, $n2);
my %node = (n1 => $n1, n2 => $n2);

my %table = (
	lv_text   => { type => 'text',  full => 0, resolver => 'last_update_wins' },
	lv_json   => { type => 'jsonb', full => 0, resolver => 'last_update_wins' },
	lv_bytea  => { type => 'bytea', full => 0, resolver => 'last_update_wins' },
	lvf_text  => { type => 'text',  full => 1, resolver => 'last_update_wins' },
	lvf_json  => { type => 'jsonb', full => 1, resolver => 'last_update_wins' },
	lvf_bytea => { type => 'bytea', full => 1, resolver => 'last_update_wins' },
	lv_fuw    => { type => 'text',  full => 0, resolver => 'first_update_wins' },
	lv_prio   => { type => 'text',  full => 0, resolver => 'replica_priority' },
);
my @tables = sort keys %table;

# The large value of row $id of a table of type $type, as SQL.
sub big_sql
{
	my ($type, $id) = @_;
	return "big_text($id)" if $type eq 'text';
	return "jsonb_build_object('id', $id, 'doc', big_text($id))" if $type eq 'jsonb';
	return "decode(big_text($id), 'hex')";
}

my $ddl = q{
CREATE FUNCTION big_text(i int) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT string_agg(md5(i || ':' || g), '') FROM generate_series(1, 700) g $$;
};
foreach my $t (@tables)
{
	$ddl .= "CREATE TABLE $t (id int PRIMARY KEY, n int NOT NULL, big $table{$t}{type});\n";
	$ddl .= "ALTER TABLE $t REPLICA IDENTITY FULL;\n" if $table{$t}{full};
	$ddl .= "SELECT concord.set_conflict_resolver('$t', '$table{$t}{resolver}');\n"
	  unless $table{$t}{resolver} eq 'last_update_wins';
}
$ddl .= q{
CREATE TABLE lv_merge (id int PRIMARY KEY, n int NOT NULL, big text);
CREATE FUNCTION merge_big(l public.lv_merge, r public.lv_merge, i concord.conflict_info)
RETURNS public.lv_merge LANGUAGE sql AS
$$ SELECT ROW(r.id, greatest(l.n, r.n), CASE WHEN l.big > r.big THEN l.big ELSE r.big END)::public.lv_merge $$;
SELECT concord.set_conflict_resolver('lv_merge', 'custom',
       'merge_big(lv_merge, lv_merge, concord.conflict_info)', 'update_origin_differs');
CREATE TABLE lv_skip (id int PRIMARY KEY, n int NOT NULL, big text);
SELECT concord.set_conflict_resolver('lv_skip', 'skip', NULL, 'update_deleted');
CREATE TABLE lv_gone (id int PRIMARY KEY, n int NOT NULL, big text);
CREATE TABLE lv_noperm (id int PRIMARY KEY, n int NOT NULL, big text);
CREATE TABLE lv_locked (id int PRIMARY KEY, n int NOT NULL, big text);
CREATE TABLE lv_moved (id int PRIMARY KEY, n int NOT NULL, big text);
SELECT concord.create_replication_set('noperm');
SELECT concord.replication_set_add_table('noperm', 'lv_noperm');
};
# lv_extra: n1 ships id, n and big only; note takes its default on n2.
foreach my $n (@nodes)
{
	$n->safe_psql('postgres',
		"CREATE TABLE lv_extra (id int PRIMARY KEY, n int NOT NULL, big text, note text NOT NULL DEFAULT 'local default');
		 SELECT concord.replication_set_add_table('default', 'lv_extra'"
		  . ($n == $n1 ? ", columns := '{id,n,big}'" : '') . ')');
}
setup_mesh(\@nodes, $ddl, [ @tables, qw(lv_merge lv_skip lv_gone lv_locked lv_moved) ]);


# The rows of a round: ids $base+1 .. $base+6, written on n1.
sub write_rows
{
	my ($base, $label, @which) = @_;
	@which = @tables unless @which;
	my $sql = '';
	foreach my $t (@which)
	{
		$sql .= "INSERT INTO $t SELECT g, 0, " . big_sql($table{$t}{type} // 'text', 'g')
		  . " FROM generate_series($base + 1, $base + 8) g;\n";
	}
	$n1->safe_psql('postgres', $sql);
	wait_for_apply_all(\@nodes, label => "$label: rows written");
	foreach my $t (@which)
	{
		is( $n2->safe_psql('postgres',
				"SELECT count(*) FROM $t WHERE id > $base AND id <= $base + 8
				    AND pg_column_size(big) > 2100
				    AND md5(big::text) = md5((" . big_sql($table{$t}{type} // 'text', 'id') . ")::text)"),
			'8',
			"$label: $t: eight rows with their large value, stored out of line, on n2");
	}
	return;
}

# One change in its own transaction on node $nn; returns its commit
# timestamp in microseconds.
sub change
{
	my ($nn, $t, $kind, $id) = @_;
	my $stmt =
	    $kind eq 'delete' ? "DELETE FROM $t WHERE id = $id"
	  : $kind eq 'update' ? "UPDATE $t SET n = n + 1 WHERE id = $id"
	  : $kind eq 'move'   ? "UPDATE $t SET id = id + 100 WHERE id = $id"
	  : "UPDATE $t SET big = " . big_sql($table{$t}{type} // 'text', $id + 1000) . " WHERE id = $id";
	my $out = $node{$nn}->safe_psql('postgres', qq{
BEGIN;
WITH w AS ($stmt RETURNING 1) SELECT count(*) AS rows FROM w \\gset
SELECT pg_current_xact_id()::text AS x \\gset
COMMIT;
SELECT :rows, (extract(epoch FROM pg_xact_commit_timestamp(:'x'::xid)) * 1000000)::bigint;
});
	my ($rows, $ts) = split /\|/, $out;
	is($rows, '1', "$nn ${kind}s row $id of $t");
	return $ts;
}

# Does version $a ({node, ts}) beat $b under resolver $r?
sub beats
{
	my ($r, $a, $b) = @_;
	if ($r eq 'replica_priority' && $priority{ $a->{node} } != $priority{ $b->{node} })
	{
		return $priority{ $a->{node} } > $priority{ $b->{node} };
	}
	if ($a->{ts} != $b->{ts})
	{
		return $r eq 'first_update_wins' ? $a->{ts} < $b->{ts} : $a->{ts} > $b->{ts};
	}
	return $a->{node} gt $b->{node};
}

# md5 of the large value of row $id of $t ($new: the replaced one).
sub big_md5
{
	my ($t, $id, $new) = @_;
	return $n1->safe_psql('postgres',
		"SELECT md5((" . big_sql($table{$t}{type} // 'text', $new ? $id + 1000 : $id) . ")::text)");
}

# The race of one round on rows $base+1 .. $base+8 of every table;
# returns { table => expected "id|n|md5" lines }.
sub race
{
	my ($base) = @_;
	my %expected;
	my @plan = (
		[ 1, [ 'n2', 'delete' ],    [ 'n1', 'update' ] ],
		[ 2, [ 'n1', 'update' ],    [ 'n2', 'delete' ] ],
		[ 3, [ 'n1', 'delete' ],    [ 'n2', 'update' ] ],
		[ 4, [ 'n2', 'update' ],    [ 'n1', 'delete' ] ],
		[ 5, [ 'n2', 'bigupdate' ], [ 'n1', 'update' ] ],
		[ 6, [ 'n1', 'update' ],    [ 'n2', 'bigupdate' ] ],
		[ 7, [ 'n1', 'update' ] ],
		[ 8 ],
	);
	foreach my $t (@tables)
	{
		my @rows;
		foreach my $p (@plan)
		{
			my ($i, @writes) = @$p;
			my $id = $base + $i;
			my $winner;
			foreach my $w (@writes)
			{
				my ($nn, $kind) = @$w;
				my $v = { node => $nn, kind => $kind, ts => change($nn, $t, $kind, $id) };
				$winner = $v if !$winner || beats($table{$t}{resolver}, $v, $winner);
			}
			my $kind = $winner ? $winner->{kind} : 'none';
			next if $kind eq 'delete';
			push @rows, join('|', $id, $kind eq 'update' ? 1 : 0, big_md5($t, $id, $kind eq 'bigupdate'));
		}
		$expected{$t} = join("\n", @rows);
	}
	return \%expected;
}

sub enable_one
{
	my ($sub_node, $prov_node) = @_;
	my $name = 'sub_' . $sub_node->name . '_' . $prov_node->name;
	$sub_node->safe_psql('postgres', "SELECT concord.alter_subscription_enable('$name')");
	ok(wait_for_apply_one($sub_node, $name, $prov_node), "$name applied everything");
	return;
}

sub check_round
{
	my ($base, $expected, $label) = @_;
	foreach my $t (@tables)
	{
		foreach my $n (@nodes)
		{
			is( $n->safe_psql('postgres',
					"SELECT id, n, md5(big::text) FROM $t WHERE id > $base AND id <= $base + 8 ORDER BY id"),
				$expected->{$t},
				"$label: $t on " . $n->name . ': the rows the resolver dictates, large values intact')
			  or diag(conflict_history_of($n));
		}
	}
	foreach my $n (@nodes)
	{
		is( $n->safe_psql('postgres',
				join(' UNION ALL ', map { "SELECT '$_', id FROM $_ WHERE big IS NULL" } @tables)),
			'', "$label: no row on " . $n->name . ' has a NULL large value');
		foreach my $t (@tables)
		{
			my ($orig, $new) = map { "to_jsonb(" . big_sql($table{$t}{type}, $_) . ")" }
			  ("(h.key->>'id')::int", "(h.key->>'id')::int + 1000");
			my $marker_ok = $table{$t}{full} ? 'false' : "h.resolution = 'keep_local'";
			is( $n->safe_psql('postgres', qq{
					SELECT h.conflict_id, h.conflict_type, h.resolution, h.key,
					       left(h.remote_row ->> 'big', 40), left(h.resolved_row ->> 'big', 40)
					  FROM concord.conflict_history h
					 WHERE h.relation = 'public.$t' AND h.conflict_type LIKE 'update%'
					   AND (h.key->>'id')::int > $base
					   AND NOT (h.remote_row -> 'big' = '{"concord_unchanged": true}' AND $marker_ok)
					   AND (h.remote_row -> 'big' IS NULL
					        OR h.remote_row -> 'big' NOT IN ($orig, $new)
					        OR (h.resolution = 'apply_remote'
					            AND h.resolved_row -> 'big' IS DISTINCT FROM h.remote_row -> 'big'))}),
				'', "$label: $t on " . $n->name
				  . ': every update_* history row shows the large value it carried (the marker only for a DEFAULT identity loser)');
		}
		is( $n->safe_psql('postgres', q{
				SELECT conflict_id, relation, conflict_type FROM concord.conflict_history
				 WHERE resolution = 'skip' AND error_message IS NULL}),
			'', "$label: no history row on " . $n->name . ' is a skip without a message');
		is( $n->safe_psql('postgres', q{
				SELECT string_agg(DISTINCT k, ',') FROM concord.conflict_history, jsonb_object_keys(key) k
				 WHERE relation LIKE 'public.lvf%'}),
			'id', "$label: the history key of REPLICA IDENTITY FULL tables on " . $n->name . ' is the primary key');
	}
	# Row 2: n1's UPDATE (earlier) reaches n2, which deleted the row later:
	# keep_local, and the value it did not send is the marker (DEFAULT) or
	# the value itself (FULL: from the old row).
	is( $n2->safe_psql('postgres', qq{
			SELECT relation, resolution, CASE WHEN remote_row -> 'big' = '{"concord_unchanged": true}'
			                                  THEN 'marker' ELSE md5(remote_row ->> 'big') END
			  FROM concord.conflict_history
			 WHERE relation IN ('public.lv_text', 'public.lvf_text') AND key->>'id' = '@{[ $base + 2 ]}'
			 ORDER BY relation}),
		"public.lv_text|keep_local|marker\npublic.lvf_text|keep_local|" . big_md5('lvf_text', $base + 2),
		"$label: n2 keeps n1's losing UPDATE of row 2 out of the history as the marker (DEFAULT) or with its value (FULL)");
	return;
}

foreach my $round (1, 2)
{
	my $base = $round == 1 ? 0 : 10;
	my $label = "round $round";
	write_rows($base, $label);
	partition_nodes(\@nodes, $label);
	my $expected = race($base);
	if ($round == 1)
	{
		enable_one($n2, $n1);
		enable_one($n1, $n2);
	}
	else
	{
		enable_one($n1, $n2);
		enable_one($n2, $n1);
	}
	wait_replicating(\@nodes, "$label: healed");
	wait_for_apply_all(\@nodes, label => "$label: healed");
	check_round($base, $expected, $label);
}

# --- a handler, the skip resolver and its replay, a row gone, no right ---------
# lv_noperm: n2 reads n1 as lv_reader, n1 reads n2 as the superuser.
$n1->safe_psql('postgres', q{
	CREATE ROLE lv_reader LOGIN REPLICATION;
	GRANT pg_read_all_settings TO lv_reader;
	GRANT USAGE ON SCHEMA concord TO lv_reader;
	GRANT SELECT ON concord.node, concord.replication_set,
	                concord.replication_set_table TO lv_reader;
	GRANT EXECUTE ON FUNCTION concord.row_filter_sql(oid, regclass) TO lv_reader;
	GRANT SELECT ON lv_noperm TO lv_reader;
});
subscribe($n2, $n1, name => 'sub_n2_n1_np', sets => ['noperm'],
	dsn => $n1->connstr('postgres') . ' user=lv_reader');
subscribe($n1, $n2, name => 'sub_n1_n2_np', sets => ['noperm']);
wait_replicating(\@nodes, 'noperm subscriptions');
wait_sync_complete(\@nodes);

my @more = qw(lv_merge lv_skip lv_gone lv_noperm lv_locked lv_extra lv_moved);
write_rows(20, 'more', @more);
partition_nodes(\@nodes, 'more');
my $ts_big = change('n2', 'lv_merge', 'bigupdate', 21);
my $ts_n   = change('n1', 'lv_merge', 'update', 21);
change('n2', 'lv_skip', 'delete', 21);
change('n1', 'lv_skip', 'update', 21);
change('n2', 'lv_gone', 'delete', 21);
change('n1', 'lv_gone', 'update', 21);
change('n1', 'lv_gone', 'delete', 21);
change('n2', 'lv_noperm', 'delete', 21);
change('n1', 'lv_noperm', 'update', 21);
change('n2', 'lv_moved', 'bigupdate', 21);
change('n1', 'lv_moved', 'update', 21);
change('n1', 'lv_moved', 'move', 21);
change('n2', 'lv_extra', 'delete', 21);
change('n1', 'lv_extra', 'update', 21);
change('n2', 'lv_locked', 'delete', 21);
change('n1', 'lv_locked', 'update', 21);
$n1->safe_psql('postgres', 'REVOKE SELECT ON lv_noperm FROM lv_reader');
# lv_locked: n1 holds an ACCESS EXCLUSIVE lock on it (a prepared
# transaction keeps it), so n2's read waits; n2 waits 5 s at most.
$n1->safe_psql('postgres', q{
	BEGIN; LOCK TABLE lv_locked IN ACCESS EXCLUSIVE MODE; PREPARE TRANSACTION 'hold';});
$n2->safe_psql('postgres', q{ALTER SYSTEM SET concord.receive_timeout = '5s'; SELECT pg_reload_conf();});
cmp_ok($ts_n, '>', $ts_big, 'more: n1 updated n of lv_merge row 21 after n2 replaced its large value');

$_->safe_psql('postgres', join('', map { "SELECT concord.alter_subscription_enable('$_->{name}');\n" } subscriptions_of($_)))
  foreach @nodes;
ok( $n2->poll_query_until('postgres', q{
		SELECT status = 'down'
		   AND last_error LIKE '%could not read the value of "big" of relation public.lv_noperm from the provider%'
		  FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1_np'}),
	'no right: n2 subscription to n1 for lv_noperm is down, its error names the column and the table')
  or diag(status_report(\@nodes));
like( $n2->safe_psql('postgres', q{SELECT last_error FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1_np'}),
	qr/permission denied for table lv_noperm/, 'no right: the error says why (the provider refused the SELECT)');
is( $n2->safe_psql('postgres', 'SELECT count(*) FROM lv_noperm WHERE id = 21'), '0',
	'no right: nothing written on n2 meanwhile (no row with a NULL value)');
ok( $n2->log_contains('REPLICA IDENTITY FULL on the table on the provider'),
	'no right: the server log carries the hint (SELECT right or REPLICA IDENTITY FULL)');
$n1->safe_psql('postgres', 'GRANT SELECT ON lv_noperm TO lv_reader');
ok( $n2->poll_query_until('postgres', q{
		SELECT status = 'down' AND last_error LIKE '%the provider did not answer within 5000 ms%'
		  FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1'}),
	'provider not answering: n2 subscription to n1 is down, its error says the provider did not answer within concord.receive_timeout')
  or diag(status_report(\@nodes));
is( $n2->safe_psql('postgres', 'SELECT count(*) FROM lv_locked WHERE id = 21'), '0',
	'provider not answering: nothing written on n2 meanwhile');
$n1->safe_psql('postgres', q{COMMIT PREPARED 'hold'});
$n2->safe_psql('postgres', q{ALTER SYSTEM RESET concord.receive_timeout; SELECT pg_reload_conf();});
wait_replicating(\@nodes, 'more: healed');
wait_for_apply_all(\@nodes, label => 'more: healed');

my $merged = $n1->safe_psql('postgres', q{SELECT md5(greatest(big_text(21), big_text(1021)))});
foreach my $n (@nodes)
{
	my $nn = $n->name;
	is($n->safe_psql('postgres', 'SELECT id, n, md5(big) FROM lv_merge WHERE id = 21'),
		"21|1|$merged", "handler: lv_merge row 21 on $nn is the merge (greatest n, greatest large value)");
	is($n->safe_psql('postgres', 'SELECT count(*) FROM lv_gone WHERE id = 21'), '0',
		"row gone: lv_gone row 21 is absent on $nn");
	is($n->safe_psql('postgres', 'SELECT id, n, md5(big) FROM lv_noperm WHERE id = 21'),
		'21|1|' . big_md5('lv_noperm', 21), "no right: once granted, lv_noperm row 21 on $nn has the update and its large value");
	is($n->safe_psql('postgres', 'SELECT id, n, md5(big) FROM lv_moved WHERE id IN (21, 121)'),
		'121|1|' . big_md5('lv_moved', 21),
		"moved away: lv_moved on $nn holds n1's row under its new key, with the large value n1 kept");
	is($n->safe_psql('postgres', 'SELECT id, n, md5(big), note FROM lv_extra WHERE id = 21'),
		'21|1|' . big_md5('lv_extra', 21) . '|local default',
		"unsent column: lv_extra row 21 on $nn is back, its large value read, its column n1 does not ship at its default");
	is($n->safe_psql('postgres', 'SELECT id, n, md5(big) FROM lv_locked WHERE id = 21'),
		'21|1|' . big_md5('lv_locked', 21), "provider not answering: once it answers, lv_locked row 21 on $nn has the update and its large value");
}
is( $n2->safe_psql('postgres', q{
		SELECT conflict_type, resolution, md5(resolved_row ->> 'big') FROM concord.conflict_history
		 WHERE relation = 'public.lv_merge'}),
	"update_origin_differs|handler_row|$merged",
	'handler: n2 ran the handler with the whole remote row (the value n1 did not send read from n1)');
is( $n2->safe_psql('postgres', q{
		SELECT conflict_type, resolution, remote_row -> 'big' = '{"concord_unchanged": true}',
		       error_message LIKE '%value of "big" was not sent%provider no longer has the row%'
		  FROM concord.conflict_history WHERE relation = 'public.lv_gone' AND conflict_type = 'update_deleted'}),
	'update_deleted|skip|t|t',
	'row gone: n2 records skip, the marker and a message that names the column and why');

like( $n2->safe_psql('postgres', q{
		SELECT conflict_type || ' ' || resolution || ' ' || error_message FROM concord.conflict_history
		 WHERE relation = 'public.lv_moved' AND key->>'id' = '21' AND conflict_type = 'update_origin_differs'}),
	qr/^update_origin_differs apply_remote the value of "big" was not sent .*no longer has the row.*deleted here as it is there$/,
	'moved away: n2 deletes its row, which lost to the UPDATE that n1 then moved away, and says so');

my ($skip_id, $skip_md5) = split /\|/, $n2->safe_psql('postgres', q{
	SELECT conflict_id, md5(remote_row ->> 'big') FROM concord.conflict_history
	 WHERE relation = 'public.lv_skip' AND resolution = 'skip'});
is($skip_md5, big_md5('lv_skip', 21), 'skip: n2 kept the whole remote row for replay (value read from n1)');
is($n2->safe_psql('postgres', "SELECT concord.conflict_reapply($skip_id)"), 'inserted',
	'skip: conflict_reapply brings the row back on n2');
wait_for_apply_all(\@nodes, label => 'skip: replayed');
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT id, n, md5(big) FROM lv_skip WHERE id = 21'),
		'21|1|' . big_md5('lv_skip', 21), 'skip: after the replay, ' . $n->name . ' has the row with its large value');
}

# Re-applying a keep_local change that carries the marker: lv_text row 6
# (n1's update lost on n2 to n2's later bigupdate: the row is there)
# updates n and leaves the large value; row 2 (n1's update lost on n2 to
# its later delete: the row is gone) is refused.
my ($upd_id) = $n2->safe_psql('postgres', q{
	SELECT conflict_id FROM concord.conflict_history
	 WHERE relation = 'public.lv_text' AND key->>'id' = '6' AND resolution = 'keep_local'
	   AND remote_row -> 'big' = '{"concord_unchanged": true}'});
is($n2->safe_psql('postgres', "SELECT concord.conflict_reapply($upd_id)"), 'updated',
	'reapply with the marker: the UPDATE of a row that is there');
is($n2->safe_psql('postgres', 'SELECT n, md5(big) FROM lv_text WHERE id = 6'), '1|' . big_md5('lv_text', 6, 1),
	'reapply with the marker: n is re-applied, the large value stays as it was here');
my ($ins_id) = $n2->safe_psql('postgres', q{
	SELECT conflict_id FROM concord.conflict_history
	 WHERE relation = 'public.lv_text' AND key->>'id' = '2' AND resolution = 'keep_local'});
my ($ret, $out, $err) = $n2->psql('postgres', "SELECT concord.conflict_reapply($ins_id)");
like($err, qr/cannot be re-applied.*\n.*DETAIL:.*lacks the value of big/,
	'reapply with the marker: the INSERT of a row that is gone is refused, naming the column');
wait_for_apply_all(\@nodes, label => 'reapplied');
checksums_match(\@nodes, [ @tables, @more ], 'the end');

# --- a row moved into a row filter --------------------------------------------------
# n2 receives lv_rf from n1 through set rf, filtered on id < 100.  An
# UPDATE that moves a row into the filter (its key from 150 to 50) arrives
# as an INSERT that lacks the large value it left unchanged: n2 reads it
# from n1.  Moved in and deleted while n2's subscription is disabled, the
# row is gone from n1 when n2 applies the INSERT: a WARNING, and the
# DELETE that follows settles it.
foreach my $n (@nodes)
{
	$n->safe_psql('postgres', 'CREATE TABLE lv_rf (id int PRIMARY KEY, n int NOT NULL, big text)');
}
$n1->safe_psql('postgres', q{
	SELECT concord.create_replication_set('rf');
	SELECT concord.replication_set_add_table('rf', 'lv_rf', row_filter := 'id < 100');});
subscribe($n2, $n1, name => 'sub_n2_n1_rf', sets => ['rf']);
wait_replicating([$n2], 'row filter subscription');
wait_sync_complete([$n2]);
$n1->safe_psql('postgres', q{INSERT INTO lv_rf SELECT g, 0, big_text(g) FROM generate_series(150, 151) g});
$n1->safe_psql('postgres', q{UPDATE lv_rf SET id = 50 WHERE id = 150});
ok(wait_for_apply_one($n2, 'sub_n2_n1_rf', $n1), 'row filter: n2 applied the row moved into the filter');
is($n2->safe_psql('postgres', 'SELECT id, n, md5(big) FROM lv_rf'), '50|0|' . big_md5('lv_rf', 150),
	'row filter: the row moved in arrives whole on n2, its large value read from n1');
$n2->safe_psql('postgres', q{SELECT concord.alter_subscription_disable('sub_n2_n1_rf')});
$n2->poll_query_until('postgres',
	q{SELECT status = 'disabled' FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1_rf'});
$n1->safe_psql('postgres', q{UPDATE lv_rf SET id = 51 WHERE id = 151});
$n1->safe_psql('postgres', q{DELETE FROM lv_rf WHERE id = 51});
my $log_offset = -s $n2->logfile;
$n2->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_n2_n1_rf')});
ok(wait_for_apply_one($n2, 'sub_n2_n1_rf', $n1), 'row filter: n2 applied the move in and the delete');
is($n2->safe_psql('postgres', 'SELECT id FROM lv_rf ORDER BY id'), '50', 'row filter: row 51, gone on n1, is not on n2');
ok( $n2->log_contains(
		'WARNING:  subscription "sub_n2_n1_rf": a remote INSERT into public.lv_rf \(id=51\) is not applied: the value of "big" was not sent',
		$log_offset),
	'row filter: n2 logs a WARNING that names the row and why it is not applied');

# An UPDATE that loses to a version here under last_update_wins needs no
# value it did not send, not even to be passed on (issue 17): the version
# it lost to reaches the next node first and wins there too.  n1 updates n of
# lv_noperm row 40 (its large value unchanged), n2 updates it later; n2
# may not read lv_noperm on n1.  n2 keeps its row without asking n1, and
# its subscription goes on.
$n1->safe_psql('postgres', q{INSERT INTO lv_noperm VALUES (40, 0, big_text(40))});
wait_for_apply_all(\@nodes, label => 'losing update: row 40 written');
$n2->safe_psql('postgres', q{SELECT concord.alter_subscription_disable('sub_n2_n1_np')});
$n2->poll_query_until('postgres',
	q{SELECT status = 'disabled' FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1_np'});
$n1->safe_psql('postgres', 'REVOKE SELECT ON lv_noperm FROM lv_reader');
$n1->safe_psql('postgres', q{UPDATE lv_noperm SET n = 1 WHERE id = 40});
$n2->safe_psql('postgres', q{UPDATE lv_noperm SET n = 2 WHERE id = 40});
$n2->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_n2_n1_np')});
ok(wait_for_apply_one($n2, 'sub_n2_n1_np', $n1),
	"losing update: n2 applied n1's changes to lv_noperm without reading the table on n1")
  or diag(status_report(\@nodes));
is( $n2->safe_psql('postgres', q{
		SELECT n || ' ' || (md5(big) = md5(big_text(40))) || ' '
		       || (SELECT string_agg(conflict_type || '/' || resolution, ',') FROM concord.conflict_history
		            WHERE relation = 'public.lv_noperm' AND key->>'id' = '40')
		  FROM lv_noperm WHERE id = 40}),
	'2 true update_origin_differs/keep_local',
	"losing update: n2 keeps its later row whole; n1's UPDATE lost (keep_local)");
is( $n2->safe_psql('postgres',
		q{SELECT coalesce(last_error, '') FROM concord.subscription_status WHERE subscription_name = 'sub_n2_n1_np'}),
	'', 'losing update: the subscription reports no error');
$n1->safe_psql('postgres', 'GRANT SELECT ON lv_noperm TO lv_reader');

done_testing();
