# DocTest: runs the examples of the manual (docs/*.md) and of README.md on
# real servers and compares what they print with what the text shows.
#
# The conventions a chapter follows are written for authors in
# docs/README.md ("How the examples are tested"); in short:
#
#   <!-- doctest: nodes paris lyon -->        the servers the chapter needs
#   <!-- doctest: nodes paris; bare -->       ... without the role "concord"
#   ```sql                                    run, in order
#   -- on lyon                                (the rest of it runs on lyon)
#   ```
#   ```output                                 what the block above prints
#   ```
#   ```sql norun                              shown, not run
#   <!-- doctest: wait -->                    every subscription caught up
#   <!-- doctest: on lyon                     SQL run without being shown
#   SELECT ...;
#   -->
#
# Every node is a fresh server configured like test/regress.conf, with a
# database "shop" and (unless "bare") a superuser role "concord"; a DSN
# written "host=<node>.example.com [port=N]" or
# "postgresql://user@<node>.example.com/db" in a block is rewritten to reach
# that node.  psql variables set with \gset carry over to later blocks of
# the chapter, on any node.

package DocTest;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use File::Basename qw(basename dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(doctest_file);

my $regress_conf = slurp_file(dirname(__FILE__) . '/../regress.conf');
my $DB = 'shop';

# --- parsing -------------------------------------------------------------------

# A chapter as a list of steps:
#   { kind => 'nodes', names => [...], bare => 0|1, line => n }
#   { kind => 'sql', text => ..., output => text|undef, line => n, norun => 0|1 }
#   { kind => 'wait', line => n }
#   { kind => 'hidden', node => name, text => ..., line => n }
sub parse_markdown
{
	my ($text) = @_;
	my @lines = split /\n/, $text, -1;
	my @steps;
	my $i = 0;
	while ($i < @lines)
	{
		my $line = $lines[$i];
		if ($line =~ /^<!--\s*doctest:\s*nodes\s+([^;>]*?)\s*(;\s*bare\s*)?-->\s*$/)
		{
			push @steps, { kind => 'nodes', names => [ split ' ', $1 ],
				bare => defined $2 ? 1 : 0, line => $i + 1 };
			$i++;
			next;
		}
		if ($line =~ /^<!--\s*doctest:\s*wait\s*-->\s*$/)
		{
			push @steps, { kind => 'wait', line => $i + 1 };
			$i++;
			next;
		}
		if ($line =~ /^<!--\s*doctest:\s*on\s+(\S+)\s*$/)
		{
			my ($node, $start) = ($1, $i + 1);
			my @body;
			$i++;
			while ($i < @lines && $lines[$i] !~ /^-->\s*$/)
			{
				push @body, $lines[$i++];
			}
			croak "unterminated doctest comment at line $start" if $i >= @lines;
			$i++;
			push @steps, { kind => 'hidden', node => $node,
				text => join("\n", @body) . "\n", line => $start };
			next;
		}
		if ($line =~ /^<!--\s*doctest/)
		{
			croak "unknown doctest directive at line " . ($i + 1) . ": $line";
		}
		if ($line =~ /^(\s*)```\s*sql(\s+norun)?\s*$/)
		{
			my ($indent, $norun, $start) = ($1, $2, $i + 1);
			my ($body, $next) = fenced_body(\@lines, $i, $indent);
			$i = $next;
			my $step = { kind => 'sql', text => $body, line => $start,
				norun => $norun ? 1 : 0 };
			# An output block may follow, after blank lines only.
			my $j = $i;
			$j++ while $j < @lines && $lines[$j] =~ /^\s*$/;
			if ($j < @lines && $lines[$j] =~ /^(\s*)```\s*output\s*$/)
			{
				my ($out, $after) = fenced_body(\@lines, $j, $1);
				$step->{output} = $out;
				# lines $j + 1 .. $after - 2 hold it (for CONCORD_DOCS_BLESS)
				$step->{out_range} = [ $j + 1, $after - 2, $1 ];
				$i = $after;
			}
			push @steps, $step;
			next;
		}
		if ($line =~ /^\s*```\s*output\s*$/)
		{
			croak "output block without a sql block before it at line " . ($i + 1);
		}
		if ($line =~ /^(\s*)```/)
		{
			# Another fenced block (sh, text, ...): skipped whole, so that
			# its content is never taken for markup.
			my (undef, $next) = fenced_body(\@lines, $i, $1);
			$i = $next;
			next;
		}
		$i++;
	}
	return @steps;
}

# The body of the fenced block opening at line $i, without the indent of
# its fence; returns (body, index of the line after the closing fence).
sub fenced_body
{
	my ($lines, $i, $indent) = @_;
	my @body;
	my $start = $i + 1;
	$i++;
	while ($i < @$lines && $lines->[$i] !~ /^\s*```\s*$/)
	{
		(my $l = $lines->[$i]) =~ s/^\Q$indent\E//;
		push @body, $l;
		$i++;
	}
	croak "unterminated fenced block opening at line $start" if $i >= @$lines;
	return (join("\n", @body) . "\n", $i + 1);
}

# --- nodes ---------------------------------------------------------------------

sub start_nodes
{
	my ($names, $bare) = @_;
	my %nodes;
	foreach my $name (@$names)
	{
		my $node = PostgreSQL::Test::Cluster->new($name);
		$node->init;
		$node->append_conf('postgresql.conf', $regress_conf);
		$node->append_conf('postgresql.conf', "autovacuum = off\nlog_statement = none");
		$node->start;
		$node->safe_psql('postgres', "CREATE DATABASE $DB");
		$node->safe_psql('postgres', 'CREATE ROLE concord SUPERUSER LOGIN')
		  unless $bare;
		$nodes{$name} = $node;
	}
	return \%nodes;
}

sub stop_nodes
{
	my ($nodes) = @_;
	foreach my $node (values %$nodes)
	{
		$node->teardown_node(fail_ok => 1);
		$node->clean_node;
	}
	return;
}

# Rewrites the DSNs of the manual's examples to reach the test's nodes.
sub rewrite_dsns
{
	my ($sql, $nodes) = @_;
	foreach my $name (keys %$nodes)
	{
		my $node = $nodes->{$name};
		my ($host, $port) = ($node->host, $node->port);
		$sql =~ s/host=\Q$name\E\.example\.com(?:\s+port=\d+)?/host=$host port=$port/g;
		(my $enc = $host) =~ s/([^A-Za-z0-9._~-])/sprintf('%%%02X', ord($1))/ge;
		$sql =~ s{(postgresql://(?:[^@/\s'"]+@)?)\Q$name\E\.example\.com(?::\d+)?}{$1$enc:$port}g;
	}
	return $sql;
}

# --- running -----------------------------------------------------------------------

# Splits a block at its "-- on <names>" lines: [ [names], text ] pairs.
sub segments
{
	my ($text, $nodes, $current) = @_;
	my @segs;
	my @lines = split /\n/, $text;
	my ($names, @buf) = ($current);
	my $flush = sub {
		push @segs, [ [@$names], join("\n", @buf) . "\n" ]
		  if grep { /\S/ && !/^\s*--/ } @buf;
		@buf = ();
	};
	foreach my $l (@lines)
	{
		if ($l =~ /^\s*--\s*on\s+(.*)$/)
		{
			my $rest = $1;
			my @named = grep { $rest =~ /\b\Q$_\E\b/ } sort keys %$nodes;
			if (@named)
			{
				$flush->();
				# in the order the line names them
				@named = sort { index($rest, $a) <=> index($rest, $b) } @named;
				$names = \@named;
			}
		}
		push @buf, $l;
	}
	$flush->();
	return (\@segs, $names);
}

# Runs SQL through psql on a node; returns (exit code, output).
sub run_psql
{
	my ($node, $sql, $vars, $stop_on_error) = @_;
	my @cmd = (
		'psql', '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', $DB,
		'-U', 'postgres', '-v', 'ON_ERROR_STOP=' . ($stop_on_error ? 1 : 0),
		'-v', 'VERBOSITY=default', '-P', 'pager=off');
	push @cmd, '-v', "$_=$vars->{$_}" foreach sort keys %$vars;
	my $want_vars = $sql =~ /\\gset/;
	$sql .= "\n\\echo \@\@DOCTEST-VARS\@\@\n\\set\n" if $want_vars;
	my $out = '';
	IPC::Run::run(\@cmd, '<', \$sql, '>&', \$out,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	my $rc = $? >> 8;
	if ($want_vars && $out =~ s/^\@\@DOCTEST-VARS\@\@\n(.*)\z//ms)
	{
		foreach my $l (split /\n/, $1)
		{
			next unless $l =~ /^([A-Za-z_][A-Za-z0-9_]*) = '(.*)'$/;
			my ($k, $v) = ($1, $2);
			next if $k =~ /^[A-Z_0-9]+$/;    # psql's own variables
			$vars->{$k} = $v;
		}
	}
	$out =~ s/^psql:<stdin>:\d+: //mg;
	return ($rc, $out);
}

sub normalize
{
	my ($s) = @_;
	$s =~ s/[ \t]+$//mg;
	$s =~ s/\A\n+//;
	$s =~ s/\n+\z//;
	return $s;
}

# Every node: no more apply workers than enabled subscriptions (those of
# disabled ones have stopped); every enabled subscription: its copy done,
# and everything its provider had written when the wait began applied.
sub wait_all
{
	my ($nodes, $where) = @_;
	foreach my $name (sort keys %$nodes)
	{
		my $node = $nodes->{$name};
		my $has = $node->safe_psql($DB,
			"SELECT count(*) FROM pg_extension WHERE extname = 'concord'");
		next unless $has;
		$node->poll_query_until($DB,
			"SELECT (SELECT count(*) FROM pg_stat_activity
			          WHERE backend_type = 'concord apply' AND datname = current_database())
			     <= (SELECT count(*) FROM concord.subscription WHERE enabled)")
		  or croak "$where: apply workers of disabled subscriptions of $name still run";
		my @subs = split /\n/, $node->safe_psql($DB,
			"SELECT s.sub_name || ' ' || n.node_name
			   FROM concord.subscription s
			   JOIN concord.node n ON n.node_id = s.provider_node_id
			  WHERE s.enabled ORDER BY 1");
		foreach my $row (@subs)
		{
			my ($sub, $prov) = split ' ', $row;
			my $provider = $nodes->{$prov}
			  or croak "$where: subscription $sub of $name: no node $prov";
			$node->safe_psql($DB,
				"SELECT concord.wait_for_subscription_sync_complete('$sub', '"
				  . $PostgreSQL::Test::Utils::timeout_default . "s')");
			my $lsn = $provider->safe_psql($DB, 'SELECT pg_current_wal_lsn()');
			my $ok = $node->safe_psql($DB,
				"SELECT concord.wait_for_apply('$sub', '$lsn', '"
				  . $PostgreSQL::Test::Utils::timeout_default . "s')");
			croak "$where: $name did not catch up with $prov through $sub"
			  unless $ok eq 't';
		}
	}
	return;
}

# Runs every example of one markdown file.  Returns the number of blocks run.
sub doctest_file
{
	my ($path) = @_;
	my $file = basename($path);
	my $source = slurp_file($path);
	my @steps = parse_markdown($source);
	my @sql = grep { $_->{kind} eq 'sql' && !$_->{norun} } @steps;
	my ($first) = grep { $_->{kind} eq 'nodes' } @steps;
	if (!@sql)
	{
		note("$file: no example to run");
		return 0;
	}
	if (!$first || $first->{line} > $sql[0]{line})
	{
		fail("$file: sql examples but no <!-- doctest: nodes ... --> before them");
		return 0;
	}

	my ($nodes, $current, %vars);
	my $ran = 0;
	foreach my $step (@steps)
	{
		my $where = "$file:$step->{line}";
		if ($step->{kind} eq 'nodes')
		{
			stop_nodes($nodes) if $nodes;
			$nodes = start_nodes($step->{names}, $step->{bare});
			$current = [ $step->{names}[0] ];
			%vars = ();
			next;
		}
		if ($step->{kind} eq 'wait')
		{
			eval { wait_all($nodes, $where); 1 }
			  or fail("$where: wait: $@");
			next;
		}
		if ($step->{kind} eq 'hidden')
		{
			my $node = $nodes->{ $step->{node} }
			  or croak "$where: no node $step->{node}";
			my ($rc, $out) = run_psql($node, rewrite_dsns($step->{text}, $nodes), \%vars, 1);
			fail("$where: hidden step failed:\n$out") if $rc != 0;
			next;
		}
		next if $step->{norun};

		my ($segs, $names) = segments($step->{text}, $nodes, $current);
		$current = $names;
		my ($rc_all, $out_all) = (0, '');
		foreach my $seg (@$segs)
		{
			my ($targets, $text) = @$seg;
			foreach my $t (@$targets)
			{
				my ($rc, $out) = run_psql($nodes->{$t}, rewrite_dsns($text, $nodes),
					\%vars, !defined $step->{output});
				$rc_all ||= $rc;
				$out_all .= $out;
			}
		}
		$ran++;
		if (defined $step->{output})
		{
			$step->{actual} = normalize($out_all);
			is($step->{actual}, normalize($step->{output}), "$where: output as shown");
		}
		else
		{
			ok($rc_all == 0 && $out_all !~ /^(ERROR|FATAL|PANIC):/m,
				"$where: runs without error")
			  or diag($out_all);
		}
	}
	stop_nodes($nodes) if $nodes;
	bless_file($file, $source, \@steps) if $ENV{CONCORD_DOCS_BLESS};
	return $ran;
}

# CONCORD_DOCS_BLESS=<dir>: writes <dir>/<file> with every output block
# replaced by what its sql block printed, for an author to compare and take.
sub bless_file
{
	my ($file, $source, $steps) = @_;
	my @lines = split /\n/, $source, -1;
	foreach my $step (reverse grep { defined $_->{actual} } @$steps)
	{
		my ($from, $to, $indent) = @{ $step->{out_range} };
		my @new = map { length($_) ? "$indent$_" : $_ } split /\n/, $step->{actual}, -1;
		splice @lines, $from, $to - $from + 1, @new;
	}
	my $out = "$ENV{CONCORD_DOCS_BLESS}/$file";
	open my $fh, '>', $out or die "cannot write $out: $!";
	print $fh join("\n", @lines);
	close $fh;
	note("wrote $out");
	return;
}

1;
