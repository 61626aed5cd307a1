# The manual's examples: every ```sql block of README.md and docs/*.md runs
# on real servers, and every ```output block matches what its block prints
# (conventions in docs/README.md, "How the examples are tested").
#
# CONCORD_DOCS="docs/replication.md ..." runs only those files.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use DocTest;
use Test::More;

my $top = "$FindBin::RealBin/../..";
my @files = $ENV{CONCORD_DOCS}
  ? map { "$top/$_" } split ' ', $ENV{CONCORD_DOCS}
  : ("$top/README.md", sort glob("$top/docs/*.md"));

my $total = 0;
foreach my $file (@files)
{
	note("--- $file");
	$total += doctest_file($file);
}
cmp_ok($total, '>', 0, "examples run: $total");

done_testing();
