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
# file that failed without a failing assertion (bad exit status, died,
# wrong or missing plan).  The same "N M" goes to --result-file.  Exits
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
		my $bad = $parser->exit || $parser->wait || $parser->parse_errors;

		# A file that broke without a failing assertion still counts once.
		$file_failed = 1 if $bad && $file_failed == 0;
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
