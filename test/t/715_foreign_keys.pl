# Tables that other tables reference by a foreign key, emptied before a
# copy: TRUNCATE refuses such a table whatever the rows, and the sync
# worker retried it for ever (the subscription stayed down).
#   A. A resynchronization that copies a table (one the merge does not
#      take: a column of a domain type) referenced by a table that only
#      fk2 has, with ON DELETE CASCADE: the copy brings the provider's
#      rows, and the rows that point to them stay.  The table's owner is
#      no superuser and lacks TRUNCATE (DELETE is what it needs), and a
#      DELETE trigger enabled ALWAYS does not fire (as with TRUNCATE).
#   B. fk3 joins the mesh through fk1 with orders and order_line (which
#      references orders) in the set, and a local table of its own that
#      references orders: the joiner empties its tables before its copy
#      (empty, but a retry finds what an attempt wrote), which failed on
#      orders; it ends with the rows of the others.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $ddl = q{
	CREATE DOMAIN qty AS int CHECK (VALUE >= 0);
	CREATE TABLE parent (id int PRIMARY KEY, q qty);
	CREATE TABLE orders (id int PRIMARY KEY, v text);
	CREATE TABLE order_line (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders, n int);
};
my @nodes = concord_nodes(2, prefix => 'fk');
my ($n1, $n2) = @nodes;
setup_mesh(\@nodes, $ddl, [qw(parent orders order_line)]);
$n1->safe_psql('postgres', q{
	INSERT INTO parent SELECT g, g FROM generate_series(1, 5) g;
	INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 50) g;
	INSERT INTO order_line SELECT g, 1 + g % 50, g FROM generate_series(1, 200) g});
wait_for_apply_all(\@nodes, label => 'rows everywhere');

# --- A. a resynchronization by a copy ----------------------------------------
$n2->safe_psql('postgres', q{
	CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE CASCADE);
	INSERT INTO child VALUES (1, 1), (2, 2), (3, 3);
	CREATE ROLE fkapp;
	ALTER TABLE parent OWNER TO fkapp;
	REVOKE TRUNCATE ON parent FROM fkapp;
	CREATE FUNCTION no_delete() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN RAISE EXCEPTION 'a DELETE trigger fired'; END$$;
	CREATE TRIGGER no_delete BEFORE DELETE ON parent FOR EACH ROW EXECUTE FUNCTION no_delete();
	ALTER TABLE parent ENABLE ALWAYS TRIGGER no_delete;});
link_down($n2, $n1);
$n1->safe_psql('postgres', q{UPDATE parent SET q = 20 WHERE id = 2; INSERT INTO parent VALUES (6, 6)});
$n2->safe_psql('postgres', q{SET session_replication_role = replica; UPDATE parent SET q = 99 WHERE id = 3});
my $log_at = -s $n2->logfile;
$n2->safe_psql('postgres', q{SELECT concord.alter_subscription_resynchronize_table('sub_fk2_fk1', 'parent')});
link_up($n2, $n1);
ok($n2->poll_query_until('postgres', q{SELECT NOT EXISTS (SELECT FROM concord.subscription_table t
	JOIN concord.subscription s USING (sub_id) WHERE s.sub_name = 'sub_fk2_fk1' AND t.sync_lsn IS NULL)}),
	'A: the resynchronization of a referenced table completes')
  or diag(status_report(\@nodes));
unlike(substr(slurp_file($n2->logfile), $log_at), qr/cannot truncate a table referenced|a DELETE trigger fired/,
	'A: no TRUNCATE refused on the way, no DELETE trigger fired');
is(ConcordTest::checksum($n2, 'parent'), ConcordTest::checksum($n1, 'parent'),
	"A: parent on fk2 equals fk1's (the damaged row mended, the new rows there)");
is($n2->safe_psql('postgres', q{SELECT string_agg(id || ':' || parent_id, ',' ORDER BY id) FROM child}),
	'1:1,2:2,3:3', 'A: the rows of the referencing table stay (no cascade)');
ok($n2->poll_query_until('postgres',
		q{SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'sub_fk2_fk1'}),
	'A: and the subscription replicates');
$n1->safe_psql('postgres', q{UPDATE parent SET q = 30 WHERE id = 2});
wait_for_apply_all(\@nodes, label => 'A: later changes');
is($n2->safe_psql('postgres', q{SELECT q FROM parent WHERE id = 2}), '30', "A: fk1's later change reaches fk2");

# --- B. a node joins with tables that reference each other -----------------
my $n3 = concord_node('fk3');
$n3->safe_psql('postgres', $ddl . q{
	CREATE TABLE local_note (id int PRIMARY KEY, order_id int REFERENCES orders);});
add_tables([$n3], [qw(parent orders order_line)]);
is($n3->safe_psql('postgres',
	"SELECT concord.join_mesh(" . quote_literal($n1->connstr('postgres')) . ")",
	timeout => $ConcordTest::TIMEOUT), '4', 'B: fk3 joined through fk1: 4 subscriptions');
$n3->safe_psql('postgres', "SELECT concord.wait_for_subscription_sync_complete('fk3_from_fk1')",
	timeout => $ConcordTest::TIMEOUT);
ok($n3->poll_query_until('postgres',
	q{SELECT count(*) = 2 AND bool_and(status = 'replicating') FROM concord.subscription_status}),
	'B: fk3 replicates from both') or diag(status_report([$n3]));
foreach my $t (qw(parent orders order_line))
{
	is(ConcordTest::checksum($n3, $t), ConcordTest::checksum($n1, $t), "B: $t on fk3 equals fk1's");
}
$n3->safe_psql('postgres', q{INSERT INTO local_note VALUES (1, 7); INSERT INTO order_line VALUES (1000, 7, 1)});
ok($n1->poll_query_until('postgres', q{SELECT count(*) = 1 FROM order_line WHERE id = 1000}),
	"B: fk3's writes reach fk1");

done_testing();
