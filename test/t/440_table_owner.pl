# A table owner who is not a superuser gains nothing by what runs when
# replication writes her table (review #1): apply and the initial copy
# write as the table's owner, in a restricted security context.  Before,
# they wrote as the bootstrap superuser, and a trigger, a default or an
# index expression of the owner's ran with superuser rights.
#
# alice owns the replicated table on the subscriber and, one after the
# other, plants code that tries ALTER ROLE alice SUPERUSER:
#   1. a trigger enabled ALWAYS (fires in apply), hit by the initial copy;
#   2. the same trigger, hit by a streamed INSERT;
#   3. the default of a column only the subscriber has;
#   4. an index expression;
#   5. a deferred constraint trigger (fires at commit).
# What her code sets with SET LOCAL, in a CHECK constraint or a trigger,
# is undone after each row (5b), and in a partition key (5c).
# Each time the write fails with alice's rights (the subscription is down,
# its last_error says why), alice stays an ordinary role, and once the
# code is removed the subscription applies everything it held back.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($p, $s) = concord_nodes(2, prefix => 'own');
foreach my $n ($p, $s)
{
	$n->safe_psql('postgres', q{
		CREATE ROLE alice LOGIN;
		CREATE SCHEMA alice AUTHORIZATION alice;
		CREATE TABLE alice.t (id int PRIMARY KEY, v text);
		ALTER TABLE alice.t OWNER TO alice;
	});
}
add_tables([ $p, $s ], ['alice.t']);
$p->safe_psql('postgres', "INSERT INTO alice.t VALUES (1, 'before')");

# alice's weapon: a function that makes her superuser, when it can.
$s->safe_psql('postgres', q{
	SET ROLE alice;
	CREATE FUNCTION alice.escalate() RETURNS int LANGUAGE plpgsql AS
	$$BEGIN EXECUTE 'ALTER ROLE alice SUPERUSER'; RETURN 1; END$$;
	CREATE FUNCTION alice.trg() RETURNS trigger LANGUAGE plpgsql AS
	$$BEGIN PERFORM alice.escalate(); RETURN NEW; END$$;
	CREATE TRIGGER escalate BEFORE INSERT ON alice.t FOR EACH ROW EXECUTE FUNCTION alice.trg();
	ALTER TABLE alice.t ENABLE ALWAYS TRIGGER escalate;
});

sub alice_is_superuser
{
	return $s->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'});
}

# Waits until the subscription is down with an error matching $like.
sub down_with
{
	my ($like, $label) = @_;
	ok($s->poll_query_until('postgres',
			"SELECT status = 'down' AND last_error LIKE '$like' FROM concord.subscription_status"),
		"$label: the write fails, the subscription is down and says why")
	  or diag($s->safe_psql('postgres', 'SELECT status, last_error FROM concord.subscription_status'));
	is(alice_is_superuser(), 'f', "$label: alice is not a superuser");
}

# Retries at once, then waits for everything the provider wrote.
sub resume
{
	my ($label) = @_;
	$s->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_own2_own1')});
	wait_for_apply_all([$s]);
	is($s->safe_psql('postgres', 'SELECT status FROM concord.subscription_status'),
		'replicating', "$label: once the code is gone, the subscription replicates");
}

# 1. The initial copy meets the trigger.
subscribe($s, $p);
down_with('%must be superuser%', 'trigger, initial copy');
$s->safe_psql('postgres', 'ALTER TABLE alice.t DISABLE TRIGGER escalate');
resume('trigger, initial copy');
is($s->safe_psql('postgres', 'SELECT v FROM alice.t WHERE id = 1'), 'before', 'the copy arrived');

# 2. A streamed INSERT meets it.
$s->safe_psql('postgres', 'ALTER TABLE alice.t ENABLE ALWAYS TRIGGER escalate');
$p->safe_psql('postgres', "INSERT INTO alice.t VALUES (2, 'streamed')");
down_with('%must be superuser%', 'trigger, stream');
$s->safe_psql('postgres', 'DROP TRIGGER escalate ON alice.t');
resume('trigger, stream');

# 3. A default of a column the provider does not send.
$s->safe_psql('postgres',
	'SET ROLE alice; ALTER TABLE alice.t ADD COLUMN z int;
	 ALTER TABLE alice.t ALTER COLUMN z SET DEFAULT alice.escalate();');
$p->safe_psql('postgres', "INSERT INTO alice.t VALUES (3, 'default')");
down_with('%must be superuser%', 'column default');
$s->safe_psql('postgres', 'ALTER TABLE alice.t ALTER COLUMN z DROP DEFAULT');
resume('column default');

# 4. An index expression.
$s->safe_psql('postgres', q{
	SET ROLE alice;
	CREATE FUNCTION alice.idx(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS
	$$BEGIN IF $1 = 'index' THEN PERFORM alice.escalate(); END IF; RETURN $1; END$$;
	CREATE INDEX t_idx ON alice.t (alice.idx(v));
});
$p->safe_psql('postgres', "INSERT INTO alice.t VALUES (4, 'index')");
down_with('%must be superuser%', 'index expression');
$s->safe_psql('postgres', 'DROP INDEX alice.t_idx');
resume('index expression');

# 5. A deferred constraint trigger: it would fire at commit.
$s->safe_psql('postgres', q{
	SET ROLE alice;
	CREATE CONSTRAINT TRIGGER late AFTER INSERT ON alice.t
	    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION alice.trg();
	RESET ROLE;
	ALTER TABLE alice.t ENABLE ALWAYS TRIGGER late;
});
$p->safe_psql('postgres', "INSERT INTO alice.t VALUES (5, 'deferred')");
down_with('%must be superuser%', 'deferred constraint trigger');
$s->safe_psql('postgres', 'DROP TRIGGER late ON alice.t');
resume('deferred constraint trigger');

# 5b. What alice's code sets, for the rest of the transaction (SET LOCAL)
#     or of the session (SET), is undone after each row, so the next row
#     of the same remote transaction runs with the worker's settings: her
#     code in a CHECK constraint, then in a trigger enabled ALWAYS.  Before,
#     both stayed (the GUC nest level was closed as by a commit), and a
#     SET stayed in the worker for good.  A table whose writes run no code
#     of a user's skips that undoing (owner.c); these two must not be
#     taken for one.
my $settings = $s->safe_psql('postgres',
	q{SELECT current_setting('work_mem') || ' ' || current_setting('lock_timeout')});
$s->safe_psql('postgres', q{
	SET ROLE alice;
	CREATE TABLE alice.seen (n serial, settings text);
	CREATE FUNCTION alice.note() RETURNS boolean LANGUAGE plpgsql AS
	$$BEGIN
		INSERT INTO alice.seen (settings)
		VALUES (current_setting('work_mem') || ' ' || current_setting('lock_timeout'));
		PERFORM set_config('work_mem', '7777kB', true);
		PERFORM set_config('lock_timeout', '7777', false);
		RETURN true;
	END$$;
	ALTER TABLE alice.t ADD CONSTRAINT noted CHECK (alice.note()) NOT VALID;
});
$p->safe_psql('postgres', "BEGIN; INSERT INTO alice.t VALUES (6, 'check'), (7, 'check'); COMMIT;");
wait_for_apply_all([$s]);
is($s->safe_psql('postgres', q{SELECT string_agg(settings, ',' ORDER BY n) FROM alice.seen}),
	"$settings,$settings", "what a CHECK constraint's code sets is undone after each row");
$s->safe_psql('postgres', q{
	ALTER TABLE alice.t DROP CONSTRAINT noted;
	TRUNCATE alice.seen;
	SET ROLE alice;
	CREATE FUNCTION alice.note_trg() RETURNS trigger LANGUAGE plpgsql AS
	$$BEGIN PERFORM alice.note(); RETURN NEW; END$$;
	CREATE TRIGGER noted BEFORE INSERT ON alice.t FOR EACH ROW EXECUTE FUNCTION alice.note_trg();
	RESET ROLE;
	ALTER TABLE alice.t ENABLE ALWAYS TRIGGER noted;
});
$p->safe_psql('postgres', "BEGIN; INSERT INTO alice.t VALUES (8, 'trigger'), (9, 'trigger'); COMMIT;");
wait_for_apply_all([$s]);
is($s->safe_psql('postgres', q{SELECT string_agg(settings, ',' ORDER BY n) FROM alice.seen}),
	"$settings,$settings", "what a trigger's code sets is undone after each row");
$s->safe_psql('postgres', 'DROP TRIGGER noted ON alice.t');

# 5c. A partition of a table partitioned by an expression of alice's
#     (an "immutable" function that sets lock_timeout): the partition's
#     constraint runs it at each write into the partition, which therefore
#     takes the nest level too.  Seen by the next row of the transaction,
#     into alice.t, whose CHECK constraint notes the settings again.
foreach my $n ($p, $s)
{
	$n->safe_psql('postgres', q{
		SET ROLE alice;
		CREATE FUNCTION alice.k(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
		$$BEGIN PERFORM set_config('lock_timeout', '7777', false); RETURN $1; END$$;
		CREATE TABLE alice.kp (id int NOT NULL, v text) PARTITION BY RANGE (alice.k(id));
		CREATE TABLE alice.kp_leaf PARTITION OF alice.kp FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
		ALTER TABLE alice.kp_leaf ADD PRIMARY KEY (id);
		RESET ROLE;
		SELECT concord.replication_set_add_table('default', 'alice.kp_leaf');});
}
$s->safe_psql('postgres', q{
	TRUNCATE alice.seen;
	ALTER TABLE alice.t ADD CONSTRAINT noted CHECK (alice.note()) NOT VALID;});
$p->safe_psql('postgres', "BEGIN; INSERT INTO alice.kp VALUES (1, 'kp'); INSERT INTO alice.t VALUES (10, 'after kp'); COMMIT;");
wait_for_apply_all([$s]);
is($s->safe_psql('postgres', q{SELECT string_agg(settings, ',' ORDER BY n) FROM alice.seen}),
	$settings, "what a partition key's function sets is undone after the write into the partition");
is($s->safe_psql('postgres', q{SELECT count(*) FROM alice.kp_leaf}), '1', 'the row is in the partition');
$s->safe_psql('postgres', 'ALTER TABLE alice.t DROP CONSTRAINT noted');

is($s->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM alice.t}),
	'1,2,3,4,5,6,7,8,9,10', 'every row the provider wrote arrived once the code was removed');

# 6. A conflict handler alice set on her partitioned table, meeting a
#    conflict in a partition the superuser created (a maintenance job, say):
#    it runs as alice, the owner of the table she set it on, not as the
#    partition's owner (review #13).
foreach my $n ($p, $s)
{
	$n->safe_psql('postgres', q{
		CREATE TABLE alice.pt (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
		ALTER TABLE alice.pt OWNER TO alice;
		CREATE TABLE alice.pt_low PARTITION OF alice.pt FOR VALUES FROM (0) TO (100);
		SELECT concord.replication_set_add_table('default', 'alice.pt');
	});
}
$s->safe_psql('postgres', q{
	GRANT USAGE ON SCHEMA concord TO alice;
	GRANT EXECUTE ON FUNCTION concord.set_conflict_resolver(regclass, text, regprocedure, text) TO alice;
	SET ROLE alice;
	CREATE FUNCTION alice.h(l alice.pt, r alice.pt, i concord.conflict_info) RETURNS alice.pt
	LANGUAGE plpgsql AS $$BEGIN PERFORM alice.escalate(); RETURN r; END$$;
	SELECT concord.set_conflict_resolver('alice.pt', 'custom',
	       'alice.h(alice.pt, alice.pt, concord.conflict_info)');
});
is($s->safe_psql('postgres', q{SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'alice.pt_low'::regclass}),
	'postgres', 'the partition belongs to the superuser');
$s->safe_psql('postgres', q{SELECT concord.alter_subscription_disable('sub_own2_own1')});
$s->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'concord apply'});
$s->safe_psql('postgres', "INSERT INTO alice.pt VALUES (7, 'here')");
$p->safe_psql('postgres', "INSERT INTO alice.pt VALUES (7, 'there')");
$s->safe_psql('postgres', q{SELECT concord.alter_subscription_enable('sub_own2_own1')});
wait_for_apply_all([$s]);
is($s->safe_psql('postgres', q{
		SELECT conflict_type || ' ' || resolution || ' ' || (error_message LIKE '%must be superuser%')
		  FROM concord.conflict_history WHERE relation = 'alice.pt_low'}),
	'insert_exists skip true', "the handler ran with alice's rights: its ALTER ROLE failed, the change was skipped");
is(alice_is_superuser(), 'f', 'alice never became a superuser');

# 7. alice granted create_subscription cannot make this server connect with
#    its own credentials (review #18): the test's servers trust local
#    connections, as a .pgpass of the server's OS user would let them in.
$s->safe_psql('postgres', q{
	GRANT EXECUTE ON FUNCTION concord.create_subscription(name, text, text[], boolean, text[], interval) TO alice;
});
my $pdsn = $p->connstr('postgres');
foreach my $case (
	[ 'no password', $pdsn, qr/a password is required in the provider's connection string/ ],
	[ 'a server file', "$pdsn passfile=/etc/passwd password=x", qr/only a superuser may give passfile/ ],
	[ 'a service of the server\'s pg_service.conf', "$pdsn service=prod password=x",
	  qr/only a superuser may give service/ ],
	[ 'a Kerberos service name', "$pdsn krbsrvname=postgres password=x",
	  qr/only a superuser may give krbsrvname/ ],
	[ 'a password the provider does not ask for', "$pdsn password=x",
	  qr/the provider did not ask for the password/ ])
{
	my ($label, $dsn, $re) = @$case;
	my ($ret, $out, $err) = $s->psql('postgres',
		"SET ROLE alice; SELECT concord.create_subscription('by_alice', " . quote_literal($dsn) . ')');
	like($err, $re, "alice's create_subscription with $label is refused");
}
is($s->safe_psql('postgres', q{SELECT count(*) FROM concord.subscription WHERE sub_name = 'by_alice'}),
	'0', 'and no subscription was made');

# 8. A subscription a superuser made (the provider trusts this server) is
#    dropped by alice, granted drop_subscription: its slot on the provider
#    goes too.  Before, her drop met "the provider did not ask for the
#    password", warned, and left the slot there, retaining WAL.
$p->safe_psql('postgres', q{SELECT concord.create_replication_set('nothing')});
subscribe($s, $p, name => 'by_postgres', sets => ['nothing'], synchronize_data => 0);
my $slot = $s->safe_psql('postgres', q{SELECT slot_name FROM concord.subscription WHERE sub_name = 'by_postgres'});
is($p->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"), '1',
	'the subscription has its slot on the provider');
$s->safe_psql('postgres', q{
	GRANT EXECUTE ON FUNCTION concord.drop_subscription(name, boolean) TO alice;
});
my ($ret, $out, $err) = $s->psql('postgres', "SET ROLE alice; SELECT concord.drop_subscription('by_postgres')");
is($ret, 0, 'alice drops the subscription a superuser made');
unlike($err, qr/WARNING/, 'without a warning');
is($p->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"), '0',
	'its slot on the provider is gone');

# 9. A password alice's DSN carried when she made the subscription must be
#    used by every later connection with it (review #18, second part).  Her
#    DSN lists two hosts: TCP on 127.0.0.1, where the provider asks for the
#    password, then the provider's unix socket, which trusts this server.
#    Once the TCP path is gone, libpq falls through to the socket.  Before,
#    the apply worker (trusted wholesale) connected that way, with this
#    server's credentials: it must refuse instead, and say why.
$p->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'");
{
	open(my $hba, '>', $p->data_dir . '/pg_hba.conf') or die "pg_hba.conf: $!";
	print $hba "local all all trust\nlocal replication all trust\n"
	  . "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n";
	close($hba);
}
$p->restart;
$p->safe_psql('postgres', q{CREATE ROLE carol LOGIN SUPERUSER REPLICATION PASSWORD 'carol secret'});
my $two_hosts = 'host=127.0.0.1,' . $p->host . ' port=' . $p->port
  . " dbname=postgres user=carol password='carol secret'";
($ret, $out, $err) = $s->psql('postgres',
	"SET ROLE alice; SELECT concord.create_subscription('by_alice_tcp', " . quote_literal($two_hosts)
	  . ", '{nothing}', false)");
is($ret, 0, 'alice subscribes with a password the provider asks for') or diag($err);
is($s->safe_psql('postgres', q{SELECT password_required FROM concord.subscription WHERE sub_name = 'by_alice_tcp'}),
	't', 'her subscription requires the password');
ok($s->poll_query_until('postgres', q{
		SELECT status = 'replicating' FROM concord.subscription_status WHERE subscription_name = 'by_alice_tcp'}),
	'it replicates over TCP');
$p->append_conf('postgresql.conf', "listen_addresses = ''");
$p->restart;
ok($s->poll_query_until('postgres', q{
		SELECT status = 'down' AND last_error LIKE '%the provider did not ask for the password%'
		  FROM concord.subscription_status WHERE subscription_name = 'by_alice_tcp'}),
	"through the socket, where this server's credentials would do, the worker refuses to connect")
  or diag($s->safe_psql('postgres', 'SELECT * FROM concord.subscription_status'));
done_testing();
