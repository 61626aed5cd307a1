# Causality, edge cases of "the remote writer had already seen the local
# version" (SPEC §5: such a change simply applies and is not logged), in a
# 3-node mesh (n1, n2, n3), every step waited for with wait_for_apply:
#
# 1. Open transaction: a transaction that wrote, then (still open, READ COMMITTED)
# updates a row whose version from another node it applied meanwhile: the
# update is causally after that version: no conflict row anywhere.
#
# 2. Restart: a node restarts, then updates a row whose version from another
# node it had applied before the restart: no conflict row anywhere.
#
# (The plain chain and concurrent updates are test/t/210_causality.pl.)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = concord_nodes(3);
my ($n1, $n2, $n3) = @nodes;

setup_mesh(\@nodes, q{
	CREATE TABLE chain (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
}, ['chain']);

$n3->safe_psql('postgres', q{INSERT INTO chain VALUES (1, 'c'), (2, 'c'), (3, 'c')});
ok(!wait_applied_from(\@nodes, $n3), 'rows written on n3 applied on n1 and n2');

# --- 1. a transaction that writes again after applying a change --------------
# n2 opens a transaction and writes (row 1); meanwhile n1 updates row 2 and
# n2 applies it; then the same, still open, transaction of n2 updates
# row 2 (READ COMMITTED: on top of n1's version, which it has seen) and
# commits.  Causally later than n1's update: no conflict anywhere.
my %before = map { $_->name => $_->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history') } @nodes;
my $bg = $n2->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe(q{UPDATE chain SET v = 'p4 n2 first write', n = n + 1 WHERE id = 1});
$n1->safe_psql('postgres', q{UPDATE chain SET v = 'p4 n1', n = n + 1 WHERE id = 2});
my @failed = wait_applied_from(\@nodes, $n1);
ok(!@failed, 'open transaction: n1\'s update of row 2 applied on n2 and n3 while n2\'s transaction is open')
  or diag(status_report(\@nodes));
is($bg->query_safe(q{SELECT v FROM chain WHERE id = 2}), 'p4 n1',
	'open transaction: the open transaction on n2 sees n1\'s version of row 2');
$bg->query_safe(q{UPDATE chain SET v = 'p4 n2 after n1', n = n + 1 WHERE id = 2});
$bg->query_safe('COMMIT');
$bg->quit;
@failed = wait_applied_from(\@nodes, $n2);
ok(!@failed, 'open transaction: n2\'s transaction applied on n1 and n3') or diag(status_report(\@nodes));
checksums_match(\@nodes, ['chain'], 'open transaction');
is($n1->safe_psql('postgres', 'SELECT v FROM chain WHERE id = 2'), 'p4 n2 after n1',
	'open transaction: n2\'s later update of row 2 is everywhere');
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
		$before{ $n->name },
		'open transaction: ' . $n->name . ': an update written after applying the row\'s version, in a transaction that had written before, is no conflict')
	  or diag(conflict_history_of($n));
}

# --- 2. a causal write right after a restart ---------------------------------
# n1 updates row 3, n2 and n3 apply it; n2 restarts (nothing is pending for
# it); n2 then updates row 3, on top of n1's version: no conflict anywhere.
%before = map { $_->name => $_->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history') } @nodes;
$n1->safe_psql('postgres', q{UPDATE chain SET v = 'p5 n1', n = n + 1 WHERE id = 3});
@failed = wait_applied_from(\@nodes, $n1);
ok(!@failed, 'after restart: n1\'s update of row 3 applied on n2 and n3') or diag(status_report(\@nodes));
$n2->restart;
wait_replicating(\@nodes, 'after restart: n2 restarted');
$n2->safe_psql('postgres', q{UPDATE chain SET v = 'p5 n2 after restart', n = n + 1 WHERE id = 3});
@failed = wait_applied_from(\@nodes, $n2);
ok(!@failed, 'after restart: n2\'s update applied on n1 and n3') or diag(status_report(\@nodes));
checksums_match(\@nodes, ['chain'], 'after restart');
foreach my $n (@nodes)
{
	is($n->safe_psql('postgres', 'SELECT count(*) FROM concord.conflict_history'),
		$before{ $n->name },
		'after restart: ' . $n->name . ': a causal update written right after a restart is no conflict')
	  or diag(conflict_history_of($n));
}

$_->stop foreach @nodes;
done_testing();
