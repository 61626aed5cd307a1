# A provider decoding a long stretch that ships nothing (a big transaction
# on a table in no set) must keep answering its subscriber.  Before, the
# output plugin reported no progress until the commit, so the WAL sender
# neither answered the subscriber's ping nor sent keepalives: the
# subscriber took the stream for dead after concord.receive_timeout,
# reconnected, decoded the same stretch again and gave up again, for ever,
# while its status showed 'replicating'.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = "concord.receive_timeout = '2s'\nwal_sender_timeout = '1s'";
my ($p, $s) = concord_nodes(2, prefix => 'sd', extra_conf => $conf);
run_on_all([ $p, $s ], 'CREATE TABLE t (id int PRIMARY KEY, v text);');
add_tables([ $p, $s ], ['t']);
$p->safe_psql('postgres', 'CREATE TABLE local_only (id int, v text)');
subscribe($s, $p);
wait_replicating([$s], 'subscribed');

my $offset = -s $s->logfile;
# Decoding these takes several times receive_timeout, and ships nothing.
$p->safe_psql('postgres',
	"INSERT INTO local_only SELECT g, 'x' FROM generate_series(1, 6000000) g");
$p->safe_psql('postgres', "INSERT INTO t VALUES (1, 'after the silent stretch')");
wait_for_apply_all([$s], label => 'after the silent stretch');
is($s->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'after the silent stretch',
	'the change after the silent stretch arrived');
my $log = substr(slurp_file($s->logfile), $offset);
unlike($log, qr/did not answer|no message from the provider/,
	'the subscriber never took the stream for dead while the provider decoded');

done_testing();
