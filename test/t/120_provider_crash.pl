# The provider killed (pg_ctl stop -m immediate) around a large
# transaction (200,000 rows; logical_decoding_work_mem is 1MB so decoding
# spills to disk):
#   1. inside the transaction, before its commit: after the restart the
#      subscriber has none of its rows, and everything committed around it
#      (before, during, after) arrives exactly once;
#   2. right after its commit: after the restart the subscriber converges
#      to exactly the committed rows.
# Pass criteria: exact counts per id range and equal checksums.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $prov = concord_node('n1', extra_conf => "logical_decoding_work_mem = '1MB'");
my $sub  = concord_node('n2');
my @both = ($prov, $sub);

run_on_all(\@both, q{
	CREATE TABLE big_t (id int PRIMARY KEY, v int NOT NULL, pad text);
});
add_tables([$prov], ['big_t']);
my $subname = subscribe($sub, $prov);
wait_replicating(\@both, 'subscribed');

# Rows per id range on the subscriber, as "range:count" lines.
my $ranges = q{
	SELECT string_agg(r || ':' || n, ' ' ORDER BY r) FROM (
	  SELECT id / 100000 AS r, count(*) AS n FROM big_t GROUP BY 1) s};

$prov->safe_psql('postgres',
	"INSERT INTO big_t SELECT g, g, 'before' FROM generate_series(1, 1000) g");
ok(wait_for_apply_one($sub, $subname, $prov), 'baseline applied');

# --- 1. killed inside the large transaction ---------------------------------
my $big = $prov->background_psql('postgres', on_error_stop => 0);
$big->query_safe('BEGIN');
$big->query_safe(
	"INSERT INTO big_t SELECT g, g, repeat('u', 50) FROM generate_series(100001, 300000) g");
# Commits while it is open, and their arrival on the subscriber: the open
# transaction holds nothing back.
$prov->safe_psql('postgres',
	"INSERT INTO big_t SELECT g, g, 'during' FROM generate_series(1001, 1100) g");
ok( $sub->poll_query_until('postgres',
		'SELECT count(*) = 1100 FROM big_t'),
	'commits made while the large transaction is open arrive')
  or diag(status_report(\@both));

$prov->stop('immediate');
eval { $big->quit; };    # its server is gone
$prov->start;

wait_replicating(\@both, 'provider restarted after the uncommitted transaction');
$prov->safe_psql('postgres',
	"INSERT INTO big_t SELECT g, g, 'after' FROM generate_series(1101, 1200) g");
ok(wait_for_apply_one($sub, $subname, $prov), 'caught up after the provider restart')
  or diag(status_report(\@both));

is($prov->safe_psql('postgres', $ranges), '0:1200',
	'provider: the uncommitted rows are gone, 1200 committed rows');
is($sub->safe_psql('postgres', $ranges), '0:1200',
	'subscriber: none of the uncommitted rows, exactly the 1200 committed ones');
checksums_match(\@both, ['big_t'], 'after the kill inside the transaction');

# --- 2. killed right after a large commit -----------------------------------
$prov->safe_psql('postgres',
	"INSERT INTO big_t SELECT g, g, repeat('c', 50) FROM generate_series(300001, 500000) g");
$prov->stop('immediate');
$prov->start;

is($prov->safe_psql('postgres', 'SELECT count(*) FROM big_t WHERE id > 300000'),
	'200000', 'provider: the committed transaction survived the crash');
wait_replicating(\@both, 'provider restarted after the large commit');
# More committed work after the restart, in the same and another table.
$prov->safe_psql('postgres', q{
	UPDATE big_t SET v = -v WHERE id % 1000 = 0;
	DELETE FROM big_t WHERE id BETWEEN 400001 AND 400100;
});
ok(wait_for_apply_one($sub, $subname, $prov), 'caught up after the second restart')
  or diag(status_report(\@both));

is($sub->safe_psql('postgres', $ranges), '0:1200 3:99999 4:99900 5:1',
	'subscriber: exactly the committed rows per range');
is($sub->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id) FROM big_t'),
	'201100|201100', 'subscriber: 201100 rows, no duplicates');
checksums_match(\@both, ['big_t'], 'after the kill after the commit');

# --- 3. the subscriber killed while it applies a large transaction ---------
$prov->safe_psql('postgres',
	"INSERT INTO big_t SELECT g, g, repeat('s', 50) FROM generate_series(500001, 600000) g");
$sub->stop('immediate');
$sub->start;
wait_replicating(\@both, 'subscriber restarted during a large transaction');
ok(wait_for_apply_one($sub, $subname, $prov), 'caught up after the subscriber restart')
  or diag(status_report(\@both));
is($sub->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id) FROM big_t'),
	'301100|301100', 'subscriber: 301100 rows, no duplicates');
checksums_match(\@both, ['big_t'], 'after the subscriber kill');

$_->stop foreach @both;
done_testing();
