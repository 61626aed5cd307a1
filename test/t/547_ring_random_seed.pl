# Randomized conflicting writes on four nodes in a ring, as
# 545_ring_random.pl, with a random seed (printed; CONCORD_SEED=<n>
# replays it): every run of the suite tries another workload.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ConcordTest;
use ConcordRounds;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

is(concord_random_rounds(topology => 'ring', rounds => 9, mixed => 3), 0,
	'ring: no key ended other than the resolvers dictate');

done_testing();
