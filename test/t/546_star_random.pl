# Randomized conflicting writes on four nodes in a star, round after
# round, checked against the resolvers' rules (issue 17), with a random
# seed (printed; CONCORD_SEED=<n> replays it).  What the workload is, what
# is expected and how a wrong key is reported is described at the top of
# test/perl/ConcordRounds.pm.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use ConcordRounds;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

is(concord_random_rounds(topology => 'star', rounds => 9, mixed => 3), 0,
	'star: no key ended other than the resolvers dictate');

done_testing();
