/*-------------------------------------------------------------------------
 *
 * lag.c
 *		Apply lag per subscription: a histogram over a sliding window.
 *
 * Each transaction apply commits adds its lag (the local commit time
 * minus the provider's commit time) to the histogram of its subscription:
 * a slice per CONCORD_LAG_SLICE_SECS seconds, the last CONCORD_LAG_SLICES
 * of them making the window.  A slice counts transactions per bucket of
 * lag; buckets split each power of two of microseconds in four, so a
 * percentile read from them is at most a quarter above the true value
 * (it is the bucket's upper bound, never more than the slice's maximum,
 * which is kept exactly).  Under the concord LWLock, which apply holds
 * anyway when it publishes a commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/pg_bitutils.h"

#include "shmem/shmem.h"

/* The bucket of a lag in microseconds. */
static int
lag_bucket(int64 us)
{
	int			b;
	int			sub;

	if (us < 4)
		return (int) Max(us, 0);
	b = pg_leftmost_one_pos64((uint64) us);
	sub = (int) ((us >> (b - 2)) & 3);
	return Min(4 * b + sub, CONCORD_LAG_BUCKETS - 1);
}

/* The largest lag a bucket holds. */
static int64
lag_bucket_upper(int bucket)
{
	int			b = bucket / 4;
	int			sub = bucket % 4;

	if (b < 2)					/* 0-3, and 4-7 which nothing fills */
		return bucket;
	if (bucket == CONCORD_LAG_BUCKETS - 1)
		return PG_INT64_MAX;
	return ((int64) (4 + sub + 1) << (b - 2)) - 1;
}

static int64
slice_number(TimestampTz now)
{
	return now / ((int64) CONCORD_LAG_SLICE_SECS * USECS_PER_SEC);
}

/* Empties a histogram (an entry handed to a new subscription). */
void
concord_lag_reset(ConcordLagHist *hist)
{
	memset(hist, 0, sizeof(ConcordLagHist));
}

/* Adds a transaction's lag; the caller holds the concord lock exclusively. */
void
concord_lag_record(ConcordLagHist *hist, TimestampTz now, int64 lag_us)
{
	int64		number = slice_number(now);
	ConcordLagSlice *slice;

	if (number <= 0)			/* a clock before 2000 */
		return;
	slice = &hist->slices[number % CONCORD_LAG_SLICES];
	if (slice->number != number)
	{
		memset(slice, 0, sizeof(ConcordLagSlice));
		slice->number = number;
	}
	lag_us = Max(lag_us, 0);	/* a provider clock ahead of ours */
	slice->counts[lag_bucket(lag_us)]++;
	slice->max_us = Max(slice->max_us, lag_us);
}

/*
 * The window's transactions, and the lag under which 50, 90 and 99 % of
 * them were applied, and the largest; the caller holds the concord lock.
 */
void
concord_lag_summary(const ConcordLagHist *hist, TimestampTz now, ConcordLagSummary *out)
{
	int64		number = slice_number(now);
	uint64		counts[CONCORD_LAG_BUCKETS] = {0};
	const double fractions[3] = {0.50, 0.90, 0.99};
	int64	   *results[3] = {&out->p50_us, &out->p90_us, &out->p99_us};
	uint64		seen = 0;
	int			next = 0;

	memset(out, 0, sizeof(ConcordLagSummary));
	for (int i = 0; i < CONCORD_LAG_SLICES; i++)
	{
		const ConcordLagSlice *slice = &hist->slices[i];

		if (slice->number <= number - CONCORD_LAG_SLICES || slice->number > number)
			continue;
		for (int b = 0; b < CONCORD_LAG_BUCKETS; b++)
		{
			counts[b] += slice->counts[b];
			out->count += slice->counts[b];
		}
		out->max_us = Max(out->max_us, slice->max_us);
	}
	for (int b = 0; b < CONCORD_LAG_BUCKETS && next < 3; b++)
	{
		seen += counts[b];
		while (next < 3 && out->count > 0 && seen >= fractions[next] * out->count)
			*results[next++] = Min(lag_bucket_upper(b), out->max_us);
	}
}
