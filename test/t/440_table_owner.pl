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

is($s->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM alice.t}),
	'1,2,3,4,5', 'every row the provider wrote arrived once the code was removed');
is(alice_is_superuser(), 'f', 'alice never became a superuser');

done_testing();
