# The layout of the source tree and of the manual, as promised in
# src/README.md and docs/README.md:
#
#  - every folder of src/ is in the Makefile's CONCORD_FOLDERS and has a
#    README.md; every C file of src/ is built;
#  - a folder's files include headers of their own folder and of the
#    folders before it in CONCORD_FOLDERS only (so the folders have no
#    include cycle); src/concord.h and src/compat.h include no folder;
#  - no file under src/ is longer than 1,000 lines;
#  - README.md is at most 400 lines, and docs/ holds every chapter.
#
# It needs no server.  The folder graph is printed as diagnostics.

use strict;
use warnings;
use FindBin;
use File::Basename qw(basename dirname);
use Test::More;

my $top = "$FindBin::RealBin/../..";

sub slurp
{
	my ($path) = @_;
	open my $fh, '<', $path or die "cannot read $path: $!";
	local $/;
	my $s = <$fh>;
	close $fh;
	return $s;
}

sub line_count
{
	my ($path) = @_;
	my $s = slurp($path);
	my $n = () = $s =~ /\n/g;
	$n++ if length($s) && substr($s, -1) ne "\n";
	return $n;
}

# --- the folder list ---------------------------------------------------
my ($list) = slurp("$top/Makefile") =~ /^CONCORD_FOLDERS\s*=\s*(.*)$/m;
ok(defined $list, 'the Makefile lists the folders of src/ in CONCORD_FOLDERS');
my @folders = split ' ', ($list // '');
my %rank;
@rank{@folders} = (0 .. $#folders);

opendir my $dh, "$top/src" or die "cannot open src: $!";
my @present = sort grep { -d "$top/src/$_" && !/^\./ } readdir $dh;
closedir $dh;
is_deeply(\@present, [ sort @folders ],
	'every folder of src/ is in CONCORD_FOLDERS, and every listed one exists');
foreach my $f (@folders)
{
	ok(-s "$top/src/$f/README.md", "src/$f has a README.md");
}
ok(-s "$top/src/README.md", 'src/ has a README.md');

# Every C file is in a listed folder or one of the top files that the
# Makefile builds by name.
my @c_files = map { s{^\Q$top\E/}{}r } glob("$top/src/*.c $top/src/*/*.c");
my @top_c = grep { m{^src/[^/]+\.c$} } @c_files;
my $makefile = slurp("$top/Makefile");
foreach my $c (@top_c)
{
	(my $o = $c) =~ s/\.c$/.o/;
	like($makefile, qr/\Q$o\E/, "the Makefile builds $c");
}
ok(!grep({ m{^src/[^/]+/[^/]+/} } glob("$top/src/*/*/*")),
	'no folder of src/ has sub-folders');

# --- includes ------------------------------------------------------------
my %edges;    # "from -> to" => first file seen
my @bad;
foreach my $path (sort glob("$top/src/*.[ch] $top/src/*/*.[ch]"))
{
	(my $rel = $path) =~ s{^\Q$top\E/}{};
	my ($folder) = $rel =~ m{^src/([^/]+)/};
	my $text = slurp($path);
	while ($text =~ /^\s*#\s*include\s+"([^"]+)"/mg)
	{
		my $inc = $1;
		my ($to) = $inc =~ m{^([^/]+)/};
		next unless defined $to && exists $rank{$to};
		# Same-named PostgreSQL headers would be found first: ours must exist.
		next unless -f "$top/src/$inc";
		if (!defined $folder)
		{
			# The top .c files may include anything; the top headers nothing.
			push @bad, "$rel includes $inc (a top header includes no folder)"
			  if $rel =~ /\.h$/;
			next;
		}
		next if $to eq $folder;
		$edges{"$folder -> $to"} //= $rel;
		push @bad, "$rel includes $inc: $to/ is not below $folder/"
		  if $rank{$to} > $rank{$folder};
	}
}
is_deeply(\@bad, [], 'each folder includes only folders below it (no cycle)')
  or diag(join("\n", @bad));
diag("folder include graph (bottom first: @folders):");
diag("  $_") foreach sort { $a cmp $b } keys %edges;

# An include that names one of our headers without its folder only works
# inside that folder; a quoted name that resolves nowhere would pick up a
# PostgreSQL header of the same name.
my @unresolved;
foreach my $path (sort glob("$top/src/*/*.[ch]"))
{
	my $dir = dirname($path);
	my $text = slurp($path);
	while ($text =~ /^\s*#\s*include\s+"([^"\/]+\.h)"/mg)
	{
		my $inc = $1;
		next if -f "$dir/$inc" || -f "$top/src/$inc";
		# PostgreSQL's own top-level headers
		next if $inc =~ /^(postgres|miscadmin|pgstat|fmgr|funcapi|libpq-fe|c|pg_config.*)\.h$/;
		(my $rel = $path) =~ s{^\Q$top\E/}{};
		push @unresolved, "$rel: \"$inc\"";
	}
}
is_deeply(\@unresolved, [], 'every short quoted include is a file of its own folder, src/ or a PostgreSQL top header')
  or diag(join("\n", @unresolved));

# --- sizes -------------------------------------------------------------------
my @long;
foreach my $path (sort glob("$top/src/*.[ch] $top/src/*/*.[ch]"))
{
	my $n = line_count($path);
	(my $rel = $path) =~ s{^\Q$top\E/}{};
	push @long, "$rel ($n lines)" if $n > 1000;
}
is_deeply(\@long, [], 'no file under src/ is longer than 1,000 lines')
  or diag(join("\n", @long));

my $readme_lines = line_count("$top/README.md");
cmp_ok($readme_lines, '<=', 400, "README.md is at most 400 lines ($readme_lines)");

# --- the manual ----------------------------------------------------------------
my @chapters = qw(
  README.md installation.md replication.md conflicts.md sql-reference.md
  monitoring.md security.md limits.md internals.md benchmarks.md upgrading.md
);
foreach my $c (@chapters)
{
	ok(-s "$top/docs/$c", "docs/$c exists");
}

# The internals chapter maps every folder.
my $internals = -f "$top/docs/internals.md" ? slurp("$top/docs/internals.md") : '';
foreach my $f (@folders)
{
	like($internals, qr{src/\Q$f\E/}, "docs/internals.md describes src/$f/");
}

# Links between the manual's files point to files that exist, and to
# headings that exist there (anchors made as GitHub makes them).
sub anchors_of
{
	my ($path) = @_;
	my %seen;
	my %anchors;
	my $in_fence = 0;
	foreach my $line (split /\n/, slurp($path))
	{
		if ($line =~ /^\s*```/)
		{
			$in_fence = !$in_fence;
			next;
		}
		next if $in_fence;
		next unless $line =~ /^#{1,6}\s+(.*?)\s*#*\s*$/;
		my $slug = lc $1;
		$slug =~ s/[^\w\- ]//g;
		$slug =~ s/ /-/g;
		my $n = $seen{$slug}++;
		$anchors{ $n ? "$slug-$n" : $slug } = 1;
	}
	return \%anchors;
}

my (@dead, %anchor_cache);
foreach my $md ("$top/README.md", glob("$top/docs/*.md"), glob("$top/src/README.md"))
{
	my $text = slurp($md);
	$text =~ s/^\s*```.*?^\s*```//msg;    # not in code
	my $dir = dirname($md);
	while ($text =~ /\]\(([^)#\s]*)(?:#([^)\s]*))?\)/g)
	{
		my ($target, $anchor) = ($1, $2);
		next if $target =~ m{^[a-z]+://};
		my $path = length $target ? "$dir/$target" : $md;
		if (!-e $path)
		{
			push @dead, basename($md) . " -> $target";
			next;
		}
		next unless defined $anchor && $path =~ /\.md$/;
		$anchor_cache{$path} //= anchors_of($path);
		push @dead, basename($md) . " -> $target#$anchor (no such heading)"
		  unless $anchor_cache{$path}{$anchor};
	}
}
is_deeply(\@dead, [], 'links between README.md and docs/ point to existing files and headings')
  or diag(join("\n", @dead));

done_testing();
