# Randomized conflicting writes on four nodes in a ring, round after
# round, checked against the resolvers' rules (issue 17), with a fixed
# seed (20261206), so that every run of the suite replays the same
# statements; 547_ring_random_seed.pl runs a random one.  What the
# workload is, what is expected and how a wrong key is reported is
# described at the top of test/perl/ConcordRounds.pm.  CONCORD_SEED=<n>
# runs another.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use ConcordRounds;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

is(concord_random_rounds(topology => 'ring', rounds => 9, mixed => 3, seed => 20261206), 0,
	'ring: no key ended other than the resolvers dictate');

done_testing();
