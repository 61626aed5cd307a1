# Bad input.
#
# While streaming, on the subscriber:
#   - a table the provider ships is missing,
#   - a column the provider ships is missing,
#   - a value does not convert (text 'abc' into an int column):
# each puts the subscription 'down' with a last_error naming the
# subscription, the relation (and the column) and the problem; later
# transactions are not applied meanwhile (the origin stays where it was);
# once the subscriber is fixed, the retry (with backoff) succeeds and
# nothing is lost: exact rows, equal checksums.
#
# create_subscription refuses, with an ERROR, and leaves nothing behind
# (no subscription, no origin, no slot): an unreachable DSN, malformed DSNs,
# a provider database that is not a concord node, a provider with
# wal_level = replica, a provider whose output_plugin_libraries lacks
# concord.
#
# The password of a DSN (password=secretpw) appears in no server log, no
# error, no column of subscription_status and no pg_stat_activity row.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $password = 'secretpw';
# In SQL we build it from pieces, so that our own statements (logged with
# log_statement = all) never contain it.
my $password_sql = q{('secret' || 'pw')};

my ($n1, $n2) = concord_nodes(2);
my $n3 = concord_node('n3', extra_conf => 'wal_level = replica');
my $n4 = concord_node('n4', extra_conf => "output_plugin_libraries = 'pgoutput'");
my @all = ($n1, $n2, $n3, $n4);

$n1->safe_psql('postgres', q{
	CREATE TABLE good_t (id int PRIMARY KEY, v text);
	CREATE TABLE miss_t (id int PRIMARY KEY, v text);
	CREATE TABLE conv_t (id int PRIMARY KEY, val text);
	CREATE DATABASE plain;
});
$n2->safe_psql('postgres', q{
	CREATE TABLE good_t (id int PRIMARY KEY, v text);
	CREATE TABLE conv_t (id int PRIMARY KEY, val int);
});
add_tables([$n1], [ 'good_t', 'conv_t' ]);

my $sub = subscribe($n2, $n1, dsn_suffix => " password=$password");
is($sub, 'sub_n2_n1', 'subscribed with a password in the DSN');
wait_replicating([$n2], 'subscribed');

$n1->safe_psql('postgres', q{
	INSERT INTO good_t SELECT g, 'g' || g FROM generate_series(1, 10) g;
	INSERT INTO conv_t VALUES (1, '1'), (2, '2');
});
ok(wait_for_apply_one($n2, $sub, $n1), 'first rows applied');
is($n2->safe_psql('postgres', 'SELECT sum(val) FROM conv_t'), '3', 'convertible text applied to int');

# Poll until the subscription is down; return its last_error.
sub wait_down
{
	my ($label) = @_;
	ok( $n2->poll_query_until('postgres',
			"SELECT status = 'down' AND last_error IS NOT NULL AND last_error_at IS NOT NULL
			   FROM concord.subscription_status WHERE subscription_name = '$sub'"),
		"$label: the subscription is down with a last_error")
	  or diag(status_report([$n2]));
	return $n2->safe_psql('postgres',
		"SELECT last_error FROM concord.subscription_status WHERE subscription_name = '$sub'");
}

# --- a missing table -------------------------------------------------------
my $log_offset = -s $n2->logfile;
$n1->safe_psql('postgres', q{
	SELECT concord.replication_set_add_table('default', 'miss_t');
	INSERT INTO miss_t VALUES (1, 'a'), (2, 'b');
});
$n1->safe_psql('postgres', q{INSERT INTO good_t VALUES (11, 'after miss_t')});
my $err = wait_down('missing table');
note("last_error: $err");
like($err, qr/\Q$sub\E/, 'missing table: last_error names the subscription');
like($err, qr/miss_t/, 'missing table: last_error names the relation');
like($err, qr/does not exist|missing|not found|no such/i, 'missing table: last_error says what is wrong');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM good_t'), '10',
	'missing table: the later transaction is not applied meanwhile');

# Retried with backoff (1 s, doubling), not in a tight loop: the server
# log's timestamps of the first four failed attempts are about 1 s, 2 s
# and 4 s apart (checked as lower bounds with 20% slack: a slow machine
# only widens them).
$n2->wait_for_log(qr/(?:ERROR:[^\n]*miss_t[^\n]*\n[\s\S]*?){4}/, $log_offset);
my @attempts;
foreach my $line (split /\n/, slurp_file($n2->logfile, $log_offset))
{
	next unless $line =~ /^\S+ (\d\d):(\d\d):(\d\d\.\d+) \S+ \[\d+\] [^\n]*ERROR:.*miss_t/;
	push @attempts, $1 * 3600 + $2 * 60 + $3;
}
my @gaps = map { $attempts[$_] - $attempts[ $_ - 1 ] } 1 .. 3;
note(sprintf('retries after %.3f s, %.3f s, %.3f s', @gaps));
cmp_ok($gaps[0], '>=', 0.8, 'missing table: the first retry waits about 1 s');
cmp_ok($gaps[1], '>=', 1.6, 'missing table: the second retry waits about 2 s (backoff doubles)');
cmp_ok($gaps[2], '>=', 3.2, 'missing table: the third retry waits about 4 s');

$n2->safe_psql('postgres', 'CREATE TABLE miss_t (id int PRIMARY KEY, v text)');
ok(wait_for_apply_one($n2, $sub, $n1), 'missing table: resumes once the table exists')
  or diag(status_report([$n2]));
wait_replicating([$n2], 'missing table fixed');
checksums_match([ $n1, $n2 ], [ 'good_t', 'miss_t', 'conv_t' ], 'missing table fixed');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM miss_t'), '2', 'missing table: both rows arrived');

# --- a missing column ------------------------------------------------------
$n1->safe_psql('postgres', q{
	ALTER TABLE good_t ADD COLUMN extra text;
	INSERT INTO good_t VALUES (12, 'with extra', 'extra12');
});
$n1->safe_psql('postgres', q{INSERT INTO conv_t VALUES (3, '3')});
$err = wait_down('missing column');
note("last_error: $err");
like($err, qr/\Q$sub\E/, 'missing column: last_error names the subscription');
like($err, qr/good_t/, 'missing column: last_error names the relation');
like($err, qr/extra/, 'missing column: last_error names the column');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM conv_t'), '2',
	'missing column: the later transaction is not applied meanwhile');

$n2->safe_psql('postgres', 'ALTER TABLE good_t ADD COLUMN extra text');
ok(wait_for_apply_one($n2, $sub, $n1), 'missing column: resumes once the column exists')
  or diag(status_report([$n2]));
wait_replicating([$n2], 'missing column fixed');
is($n2->safe_psql('postgres', 'SELECT extra FROM good_t WHERE id = 12'), 'extra12',
	'missing column: the value arrived');
checksums_match([ $n1, $n2 ], [ 'good_t', 'miss_t', 'conv_t' ], 'missing column fixed');

# --- a value that does not convert -----------------------------------------
$n1->safe_psql('postgres', q{INSERT INTO conv_t VALUES (4, 'abc')});
$n1->safe_psql('postgres', q{INSERT INTO good_t VALUES (13, 'after abc', NULL)});
$err = wait_down('conversion');
note("last_error: $err");
like($err, qr/\Q$sub\E/, 'conversion: last_error names the subscription');
like($err, qr/conv_t/, 'conversion: last_error names the relation');
like($err, qr/\bval\b/, 'conversion: last_error names the column');
like($err, qr/abc|invalid input/i, 'conversion: last_error shows the problem');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM good_t'), '12',
	'conversion: the later transaction is not applied meanwhile');

$n2->safe_psql('postgres', 'ALTER TABLE conv_t ALTER COLUMN val TYPE text');
ok(wait_for_apply_one($n2, $sub, $n1), 'conversion: resumes once the column is text')
  or diag(status_report([$n2]));
wait_replicating([$n2], 'conversion fixed');
checksums_match([ $n1, $n2 ], [ 'good_t', 'miss_t', 'conv_t' ], 'conversion fixed');
is($n2->safe_psql('postgres', 'SELECT string_agg(val, \',\' ORDER BY id) FROM conv_t'),
	'1,2,3,abc', 'conversion: every value arrived');

# --- create_subscription refusals ------------------------------------------
my $n1_host = $n1->host;
my $free_port = PostgreSQL::Test::Cluster::get_free_port();
my %bad = (
	'unreachable provider' =>
	  [ "host=127.0.0.1 port=$free_port dbname=postgres connect_timeout=10 password=$password",
		qr/connect|provider|refused/i, undef ],
	'no server on the socket' =>
	  [ "host=$n1_host port=$free_port dbname=postgres password=$password",
		qr/connect|provider|No such file/i, undef ],
	'malformed DSN (keyword without value)' =>
	  [ "host=$n1_host port password=$password", qr/dsn|connection|conninfo|missing|invalid/i, undef ],
	'malformed DSN (unterminated quote)' =>
	  [ "password=$password dbname='postgres", qr/dsn|connection|conninfo|unterminated|invalid/i, undef ],
	'database without concord' =>
	  [ $n1->connstr('plain') . " password=$password", qr/concord|node/i, undef ],
	'provider with wal_level = replica' =>
	  [ $n3->connstr('postgres') . " password=$password", qr/wal_level|logical/i, $n3 ],
	'provider without concord in output_plugin_libraries' =>
	  [ $n4->connstr('postgres') . " password=$password", qr/output_plugin_libraries|output plugin/i, $n4 ],
);
my $catalog_state = q{SELECT (SELECT count(*) FROM concord.subscription) || '/'
                          || (SELECT count(*) FROM pg_replication_origin)};
my $state_before = $n2->safe_psql('postgres', $catalog_state);
my $i = 0;
foreach my $case (sort keys %bad)
{
	my ($dsn, $re, $provider) = @{ $bad{$case} };
	$i++;
	my ($ret, $stdout, $stderr) = $n2->psql('postgres',
		"SET log_statement = 'none';
		 SET log_min_error_statement = 'panic';
		 SELECT concord.create_subscription('bad_$i', " . quote_literal($dsn) . ")");
	isnt($ret, 0, "$case: create_subscription fails");
	like($stderr, qr/ERROR:/, "$case: with an ERROR");
	like($stderr, $re, "$case: the ERROR says why") or diag($stderr);
	unlike($stderr, qr/\Q$password\E/, "$case: the ERROR does not show the password");
	if ($case =~ /wal_level|output_plugin/)
	{
		like($stderr, qr/^HINT:/m, "$case: with a HINT") or diag($stderr);
	}
	is($n2->safe_psql('postgres', $catalog_state), $state_before,
		"$case: no subscription and no origin left on the subscriber");
	is($provider->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'}), '0',
		"$case: no slot left on the provider")
	  if $provider;
}
is($n1->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'}), '1',
	'n1 holds only the slot of the working subscription');
wait_replicating([$n2], 'the working subscription survived the refusals');

# --- the password appears nowhere -------------------------------------------
foreach my $n ($n1, $n2)
{
	is( $n->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity
			  WHERE pid <> pg_backend_pid()
			    AND concat_ws(' ', query, application_name, backend_type, client_addr)
			        LIKE '%' || $password_sql || '%'"),
		'0', $n->name . ': no pg_stat_activity row shows the password');
}
is( $n2->safe_psql('postgres',
		"SELECT count(*) FROM concord.subscription_status s
		  WHERE s::text LIKE '%' || $password_sql || '%'"),
	'0', 'subscription_status does not show the password');
foreach my $n (@all)
{
	my $log = slurp_file($n->logfile);
	my @lines = grep { /\Q$password\E/ } split /\n/, $log;
	is(scalar @lines, 0, $n->name . ': the server log never shows the password')
	  or diag(join("\n", @lines[ 0 .. ($#lines < 4 ? $#lines : 4) ]));
}

$_->stop foreach @all;
done_testing();
