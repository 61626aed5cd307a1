# wait_for_apply with the provider's pg_current_wal_insert_lsn() when the
# provider's WAL ends exactly at a page boundary: the insert position is
# then just past the next page's header, where nothing is written yet, and
# the provider's WAL sender says its WAL ends at the page's start.  Before,
# the wait lasted until the provider wrote something more (seen in CI:
# TAP 530 waited four minutes, its wait helper using the insert position).
#
# n2 subscribes to n1.  On n1, non-transactional logical messages (which
# concord does not ship) pad the WAL until it ends at a page boundary,
# with nothing else writing; the insert position is then that boundary
# plus the short page header.  Pass: wait_for_apply for it returns true
# on n2 (with a timeout of 30 s; before, false after 30 s).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($n1, $n2) = concord_nodes(2, prefix => 'pb');
run_on_all([ $n1, $n2 ], 'CREATE TABLE t (id int PRIMARY KEY)');
add_tables([ $n1, $n2 ], ['t']);
subscribe($n2, $n1);
wait_replicating([$n2], 'pb2 subscribes to pb1');
$n1->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
ok(wait_for_apply_one($n2, 'sub_pb2_pb1', $n1), 'pb2 caught up');

# Pads n1's WAL to a page boundary: one message measures a record's
# overhead, the next fills the page.  Returns the insert position once it
# is 24 bytes past a page boundary (the short page header), or undef.
sub pad_to_boundary
{
	foreach my $try (1 .. 20)
	{
		my ($lsn, $used) = split /\|/, $n1->safe_psql('postgres', q{
			SELECT pg_current_wal_insert_lsn(),
			       (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint % 8192});
		return $lsn if $used == 24;
		if (8192 - $used < 1500)
		{
			# Too little room to measure: go on to the next page first.
			$n1->safe_psql('postgres',
				"SELECT pg_logical_emit_message(false, 'pad', repeat('x', " . (8192 - $used + 100) . "))");
			next;
		}
		my $before = $n1->safe_psql('postgres', q{SELECT pg_current_wal_insert_lsn()});
		$n1->safe_psql('postgres', q{SELECT pg_logical_emit_message(false, 'pad', repeat('x', 400))});
		my ($delta, $used2) = split /\|/, $n1->safe_psql('postgres', qq{
			SELECT pg_current_wal_insert_lsn() - '$before'::pg_lsn,
			       (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint % 8192});
		my $overhead = $delta - 400;    # record header and alignment
		my $fill = 8192 - $used2 - $overhead;
		next if $fill < 300;
		$n1->safe_psql('postgres', "SELECT pg_logical_emit_message(false, 'pad', repeat('x', $fill))");
	}
	return undef;
}

my $lsn = pad_to_boundary();
ok(defined $lsn, "pb1's WAL ends at a page boundary (insert position $lsn)")
  or BAIL_OUT('could not pad the WAL to a page boundary');
is($n2->safe_psql('postgres', "SELECT concord.wait_for_apply('sub_pb2_pb1', '$lsn', '30s')"), 't',
	'wait_for_apply for the insert position just past the empty page\'s header returns true');

done_testing();
