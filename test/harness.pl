#!/usr/bin/perl
#
# Run TAP test files with TAP::Harness and report the assertions that
# passed and failed.
#
#   perl test/harness.pl [--result-file FILE] [--log-dir DIR] FILE...
#
# FILE.sql  runs through psql against the server named by PGHOST, PGPORT,
#           PGDATABASE (pgTAP tests);
# FILE.pl   runs through perl (PostgreSQL::Test::Cluster tests; PERL5LIB,
#           PATH, TESTDIR and PG_REGRESS come from the caller).
#
# Prints, last, one machine-readable line:
#     HARNESS-RESULT passed=N failed=M
# where N counts passing assertions and M failing ones, plus one for every
# file that broke (died, psql error, bad exit status, wrong or missing
# plan).  The same "N M" goes to --result-file.  Exits
# non-zero when M > 0.
#
# --log-dir: where PostgreSQL::Test::Utils writes regress_log_<test>; the
# end of that log is shown for each failing .pl file.

use strict;
use warnings;
use File::Basename qw(basename);
use Getopt::Long qw(GetOptions);
use TAP::Harness;

my ($result_file, $log_dir);
GetOptions(
	'result-file=s' => \$result_file,
	'log-dir=s'     => \$log_dir,
) or die "usage: $0 [--result-file FILE] [--log-dir DIR] FILE...\n";
my @files = @ARGV;

# How to run each kind of file.
sub command_for
{
	my ($file) = @_;
	return [
		'psql', '-X', '--no-align', '--tuples-only', '--quiet',
		'-v', 'ON_ERROR_STOP=1', '-f', $file
	] if $file =~ /\.sql$/;
	return [ $^X, $file ] if $file =~ /\.pl$/;
	die "harness.pl: do not know how to run $file\n";
}

my $harness = TAP::Harness->new(
	{
		verbosity => 0,
		timer     => 1,
		color     => 0,
		exec      => sub { my ($h, $file) = @_; return command_for($file); },
	});

my ($passed, $failed) = (0, 0);
if (@files)
{
	my $aggregator = $harness->runtests(@files);
	foreach my $file (@files)
	{
		my ($parser) = $aggregator->parsers($file);
		my @ok     = $parser->passed;    # includes skipped and TODO
		my @not_ok = $parser->failed;
		my $file_passed = scalar @ok;
		my $file_failed = scalar @not_ok;

		# A file that broke (died, psql error, wrong or missing plan) counts
		# once more.  Test::More exits with the number of failed assertions:
		# that alone is not a break.
		my $expected_exit =
		  ($file =~ /\.pl$/ && $file_failed) ? ($file_failed > 254 ? 254 : $file_failed) : 0;
		my $broken = $parser->parse_errors
		  || ($parser->wait && !$parser->exit)    # killed by a signal
		  || $parser->exit != $expected_exit;
		$file_failed++ if $broken;
		$passed += $file_passed;
		$failed += $file_failed;

		show_log($file) if $file_failed && $file =~ /\.pl$/;
	}
}

# Show the end of a failing Perl test's log (PostgreSQL::Test::Utils keeps
# the details there, not on stdout).
sub show_log
{
	my ($file) = @_;
	return unless defined $log_dir;
	(my $name = basename($file)) =~ s/\.[^.]+$//;
	my $log = "$log_dir/regress_log_$name";
	return unless -r $log;
	open my $fh, '<', $log or return;
	my @lines = <$fh>;
	close $fh;
	my $from = @lines > 80 ? @lines - 80 : 0;
	print "--- last lines of $log ---\n", @lines[ $from .. $#lines ];
	print "--- end of $log ---\n";
	return;
}

if (defined $result_file)
{
	open my $out, '>', $result_file or die "cannot write $result_file: $!\n";
	print $out "$passed $failed\n";
	close $out;
}
print "HARNESS-RESULT passed=$passed failed=$failed\n";
exit($failed ? 1 : 0);
