# Data types, TOAST, names and TRUNCATE, between two nodes subscribed to
# each other (a 2-node mesh), writes on both.
#   - numeric (NaN, +-Infinity, big scale), text with quotes, backslashes,
#     newlines and non-ASCII, bytea with NUL bytes, jsonb, json, int[],
#     text[] (NULL elements, quotes, 2-D), timestamptz (incl. infinity),
#     date, interval, uuid, an enum (whose label has quotes), a domain, a
#     composite type and an array of it; all-NULL rows; updates and deletes;
#   - a table with REPLICA IDENTITY FULL and no primary key;
#   - a 300 kB out-of-line TOASTed value left unchanged by an UPDATE of
#     another column, and by an UPDATE of the key: it stays on the
#     subscriber, never NULL;
#   - schema and table names with quotes, spaces and non-ASCII characters,
#     and a same-named table in another schema that must stay untouched;
#   - TRUNCATE of several tables, followed by inserts in the same
#     transaction; TRUNCATE from the other node.
# Pass criteria: exact values, counts and checksums.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# (No "use utf8": names and values are UTF-8 bytes end to end.)
my $sch  = '"Ünïcode sch"';
my $weird = qq{$sch."we""ird tab"};
my $its   = qq{$sch."it's tab"};
my $mixed = 'public."MiXed.Case Tab"';

my ($n1, $n2) = concord_nodes(2);
my @both = ($n1, $n2);

run_on_all(\@both, qq{
	CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s "fine"');
	CREATE DOMAIN posint AS int CHECK (VALUE > 0);
	CREATE TYPE pair AS (a int, b text);
	CREATE TABLE typ (
		id int PRIMARY KEY,
		n numeric, n2 numeric(12,4), i8 bigint, f8 float8, b bool,
		tx text, vc varchar(20), by bytea, j jsonb, js json,
		ia int[], ta text[], ts timestamptz, d date, iv interval, u uuid,
		m mood, dp posint, c pair, ca pair[]);
	CREATE TABLE rif (a int NOT NULL, b text);
	ALTER TABLE rif REPLICA IDENTITY FULL;
	CREATE TABLE toast_t (id int PRIMARY KEY, big text, small int, bb bytea);
	ALTER TABLE toast_t ALTER COLUMN big SET STORAGE EXTERNAL;
	ALTER TABLE toast_t ALTER COLUMN bb SET STORAGE EXTERNAL;
	CREATE SCHEMA $sch;
	CREATE TABLE $weird ("Id" int PRIMARY KEY, "Cöl 1" text, "quote""col" int,
	                     "sp ace" jsonb);
	CREATE TABLE public."we""ird tab" ("Id" int PRIMARY KEY, "Cöl 1" text,
	                     "quote""col" int, "sp ace" jsonb);
	CREATE TABLE $its (id int PRIMARY KEY, "Ä" text);
	CREATE TABLE $mixed (id int PRIMARY KEY, v text);
	CREATE TABLE trunc_a (id int PRIMARY KEY, v text);
	CREATE TABLE trunc_b (id int PRIMARY KEY, v text);
	CREATE TABLE trunc_c (id int PRIMARY KEY, v text);
});
my @tables = ('typ', 'rif', 'toast_t', $weird, $its, $mixed, 'trunc_a', 'trunc_b', 'trunc_c');
add_tables(\@both, \@tables);
build_mesh(\@both);
wait_replicating(\@both, 'mesh of two');

my @checked = ('typ', [ 'rif', 'a, b' ], [ $weird, '"Id"' ], $its, $mixed,
	'trunc_a', 'trunc_b', 'trunc_c');

# --- types: rows 1..99 written on n1, 101..199 on n2 --------------------------
my $rows = q{
	(%1, 12345678901234567890.123456789, 3.14159, 9223372036854775807, 1.5e-300, true,
	 E'quote '' dq " bs \\\\ nl \n tab \t ünï 😀', 'short', '\x00ff00deadbeef'::bytea,
	 '{"a": [1, 2.50, null, "x\\"y"], "b": {"c": true}}', '{"keep":  "spacing"}',
	 '{1,NULL,3}', '{"a b",NULL,"c\\"d","",NULL}', '2024-02-29 12:34:56.789+05:30',
	 '2000-01-01', '1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
	 'it''s "fine"', 7, ROW(1, 'x,y (z)'), ARRAY[ROW(1, 'a')::pair, ROW(NULL, NULL)::pair]),
	(%2, 'NaN', -0.0001, -1, '-Infinity', false, '', '', '\x'::bytea, '[]', 'null',
	 '{}', '{{a,b},{c,d}}', 'infinity', '-infinity', '-1 day', NULL, 'sad', 1, ROW(NULL, ''), '{}'),
	(%3, 'Infinity', NULL, NULL, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL),
	(%4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL)
};
foreach my $pair ([ $n1, 0 ], [ $n2, 100 ])
{
	my ($node, $base) = @$pair;
	my $values = $rows;
	$values =~ s/%(\d)/$base + $1/ge;
	$node->safe_psql('postgres', "INSERT INTO typ VALUES $values");
	$node->safe_psql('postgres', qq{
		UPDATE typ SET j = j || '{"upd": 1}', ia = ia || 4, m = 'happy',
		               c = ROW((c).a + 1, (c).b || '!'), n = n * 2
		 WHERE id = $base + 1;
		UPDATE typ SET tx = 'was null', dp = 3 WHERE id = $base + 3;
		DELETE FROM typ WHERE id = $base + 2;
		INSERT INTO rif VALUES ($base + 1, 'one'), ($base + 2, NULL), ($base + 3, 'three');
		UPDATE rif SET b = 'two' WHERE a = $base + 2;
		DELETE FROM rif WHERE a = $base + 3;
		UPDATE rif SET a = $base + 10 WHERE a = $base + 1;
	});
}
wait_for_apply_all(\@both, label => 'types');
checksums_match(\@both, [ 'typ', [ 'rif', 'a, b' ] ], 'types');
foreach my $node (@both)
{
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FROM typ WHERE id IN (1, 3, 4, 101, 103, 104)}),
		'6', $node->name . ': typ holds the 6 remaining rows');
	is( $node->safe_psql('postgres', q{
			SELECT by = '\x00ff00deadbeef'::bytea AND m = 'happy' AND (c).b = 'x,y (z)!'
			       AND j->>'upd' = '1' AND ia = '{1,NULL,3,4}' AND dp = 7
			       AND n = 24691357802469135780.246913578
			       AND tx = E'quote '' dq " bs \\\\ nl \n tab \t ünï 😀'
			       AND ts = '2024-02-29 07:04:56.789+00'
			  FROM typ WHERE id = 101}),
		't', $node->name . ': row 101 has exactly the values written on n2');
	is( $node->safe_psql('postgres', q{
			SELECT n::text || '|' || f8::text || '|' || coalesce(tx, 'NULL') || '|' || dp
			  FROM typ WHERE id = 3}),
		'Infinity|NaN|was null|3', $node->name . ': row 3 (n1) special values');
	is($node->safe_psql('postgres', q{SELECT string_agg(a || '=' || coalesce(b, 'NULL'), ',' ORDER BY a) FROM rif}),
		'2=two,10=one,102=two,110=one', $node->name . ': REPLICA IDENTITY FULL rows');
}

# --- unchanged TOAST values ------------------------------------------------------
$n1->safe_psql('postgres', q{
	INSERT INTO toast_t
	SELECT i, string_agg(md5(i::text || g::text), '' ORDER BY g), i,
	       decode(string_agg(md5(g::text || i::text), '' ORDER BY g), 'hex')
	  FROM generate_series(1, 4) i, generate_series(1, 10000) g GROUP BY i;
});
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1), 'TOAST rows applied');
my $toast_sum = q{SELECT string_agg(id || ':' || coalesce(md5(big), 'NULL') || ':'
                  || coalesce(length(big), -1) || ':' || coalesce(md5(bb), 'NULL') || ':' || small,
                  ' ' ORDER BY id) FROM toast_t};
is($n1->safe_psql('postgres',
		"SELECT pg_relation_size(reltoastrelid) > 1000000 FROM pg_class WHERE relname = 'toast_t'"),
	't', 'the values are stored out of line');
$n1->safe_psql('postgres', q{
	UPDATE toast_t SET small = small + 100 WHERE id = 1;  -- big, bb unchanged
	UPDATE toast_t SET id = 20 WHERE id = 2;              -- key change, big unchanged
	UPDATE toast_t SET big = big || 'z' WHERE id = 3;      -- bb unchanged
	UPDATE toast_t SET small = NULL, bb = NULL WHERE id = 4;
});
ok(wait_for_apply_one($n2, 'sub_n2_n1', $n1), 'TOAST updates applied');
is($n2->safe_psql('postgres', $toast_sum), $n1->safe_psql('postgres', $toast_sum),
	'n2: the unchanged TOASTed values are intact (md5 and length of each)');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM toast_t WHERE big IS NULL OR length(big) < 320000'),
	'0', 'n2: no TOASTed value became NULL or shorter');
is($n2->safe_psql('postgres', 'SELECT count(bb) FROM toast_t'), '3',
	'n2: exactly the one bytea set to NULL is NULL');
# And the other way: n2 updates a row it owns, leaving its TOASTed value.
$n2->safe_psql('postgres', q{
	INSERT INTO toast_t SELECT 100, string_agg(md5(g::text), '' ORDER BY g), 0, NULL
	  FROM generate_series(1, 10000) g;
});
ok(wait_for_apply_one($n1, 'sub_n1_n2', $n2), 'n2\'s TOAST row applied on n1');
$n2->safe_psql('postgres', 'UPDATE toast_t SET small = 1 WHERE id = 100');
ok(wait_for_apply_one($n1, 'sub_n1_n2', $n2), 'n2\'s update applied on n1');
is($n1->safe_psql('postgres', $toast_sum), $n2->safe_psql('postgres', $toast_sum),
	'n1: the TOASTed value written on n2 is intact after an update of another column');

# --- names ----------------------------------------------------------------------
$n1->safe_psql('postgres', qq{
	INSERT INTO $weird VALUES (1, 'ñ "x" \\ y', 1, '{"k y": "v\\"z"}'), (2, NULL, NULL, NULL);
	INSERT INTO $its VALUES (1, 'Ä''s value');
	INSERT INTO $mixed VALUES (1, 'mixed');
	UPDATE $weird SET "quote""col" = 2, "Cöl 1" = 'çhanged' WHERE "Id" = 2;
});
$n2->safe_psql('postgres', qq{
	INSERT INTO $weird VALUES (101, 'from n2', 101, '[]');
	INSERT INTO $its VALUES (101, 'ÿ');
	DELETE FROM $mixed WHERE id = 1;
});
wait_for_apply_all(\@both, label => 'names');
checksums_match(\@both, [ [ $weird, '"Id"' ], $its, $mixed ], 'names');
foreach my $node (@both)
{
	is($node->safe_psql('postgres', qq{SELECT string_agg("Id" || '=' || coalesce("Cöl 1", 'NULL'), ',' ORDER BY "Id") FROM $weird}),
		'1=ñ "x" \ y,2=çhanged,101=from n2', $node->name . ': rows of "we""ird tab"');
	is($node->safe_psql('postgres', qq{SELECT string_agg(id || '=' || "Ä", ',' ORDER BY id) FROM $its}),
		"1=Ä's value,101=ÿ", $node->name . ": rows of \"it's tab\"");
	is($node->safe_psql('postgres', qq{SELECT count(*) FROM $mixed}), '0',
		$node->name . ': "MiXed.Case Tab" row deleted');
	is($node->safe_psql('postgres', q{SELECT count(*) FROM public."we""ird tab"}), '0',
		$node->name . ': the same-named table in schema public is untouched');
}

# --- TRUNCATE --------------------------------------------------------------------
$n1->safe_psql('postgres', q{
	INSERT INTO trunc_a SELECT g, 'a' FROM generate_series(1, 100) g;
	INSERT INTO trunc_b SELECT g, 'b' FROM generate_series(1, 100) g;
});
$n2->safe_psql('postgres', q{INSERT INTO trunc_c SELECT g, 'c' FROM generate_series(1, 50) g});
wait_for_apply_all(\@both, label => 'before TRUNCATE');
is($n2->safe_psql('postgres', 'SELECT (SELECT count(*) FROM trunc_a) + (SELECT count(*) FROM trunc_b)'),
	'200', 'n2: rows to truncate are there');
$n1->safe_psql('postgres', q{
	BEGIN;
	TRUNCATE trunc_a, trunc_b;
	INSERT INTO trunc_a VALUES (1000, 'after truncate');
	COMMIT;
});
$n2->safe_psql('postgres', qq{TRUNCATE trunc_c; TRUNCATE $weird;});
wait_for_apply_all(\@both, label => 'TRUNCATE');
foreach my $node (@both)
{
	is($node->safe_psql('postgres', q{
			SELECT (SELECT string_agg(id || v, ',') FROM trunc_a) || '|'
			    || (SELECT count(*) FROM trunc_b) || '|' || (SELECT count(*) FROM trunc_c)}),
		'1000after truncate|0|0', $node->name . ': TRUNCATE replicated, the insert after it too');
	is($node->safe_psql('postgres', qq{SELECT count(*) FROM $weird}), '0',
		$node->name . ': TRUNCATE of the oddly named table replicated');
}
checksums_match(\@both, \@checked, 'everything');

$_->stop foreach @both;
done_testing();
