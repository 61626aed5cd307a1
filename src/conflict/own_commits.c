/*-------------------------------------------------------------------------
 *
 * own_commits.c
 *		The transactions a subscription's apply worker committed, and their
 *		origins.
 *
 * Conflict detection asks, for every remote UPDATE and DELETE, which
 * origin wrote the local row: the commit timestamp record of the row's
 * xmin (pg_commit_ts).  When the rows being changed were written long
 * enough ago, those records are spread over more pages than the commit
 * timestamp buffers hold, and a look-up reads a page from its file.
 * Yet most rows a subscription changes were last written by its own apply
 * worker, which knows what it committed: the transactions it committed,
 * kept as runs of consecutive transaction ids of one origin, answer the
 * question for those rows without the look-up.  The answer is the one
 * pg_commit_ts gives: a transaction's record holds the origin it
 * committed under.
 *
 * The runs are kept in shared memory per subscription (shmem/shmem.h), so that
 * a worker started again after an error or a disable finds those of the
 * workers before it; they are lost at a server restart, and only the
 * latest CONCORD_COMMIT_RUNS are kept.  Only the subscription's apply
 * worker uses them: the latest to attach owns them, under their lock, so
 * that a worker still exiting when its entry was handed on can neither
 * write into them nor read them.  A transaction id not found in them is
 * looked up in pg_commit_ts as before.  An id is trusted only while it is
 * less than 2^31 transactions old: beyond that the same 32-bit id may
 * name a newer transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "miscadmin.h"
#include "storage/lwlock.h"

#include "conflict/own_commits.h"

static ConcordCommitRuns *Runs = NULL;

static void note_locked(FullTransactionId fxid, RepOriginId origin);
static bool origin_locked(TransactionId xid, RepOriginId *origin);

/* The apply worker of the subscription whose runs these are starts. */
void
concord_own_commits_attach(ConcordCommitRuns *runs)
{
	LWLockAcquire(runs->lock, LW_EXCLUSIVE);
	runs->owner = MyProcPid;
	LWLockRelease(runs->lock);
	Runs = runs;
}

/* Takes the runs' lock; false (and no lock) if they are not ours. */
static bool
lock_own_runs(LWLockMode mode)
{
	if (Runs == NULL)
		return false;
	LWLockAcquire(Runs->lock, mode);
	if (Runs->owner == MyProcPid)
		return true;
	LWLockRelease(Runs->lock);
	return false;
}

static uint64
run_end(const ConcordCommitRun *run)
{
	return U64FromFullTransactionId(run->first) + run->count;
}

/* Notes that this worker's transaction fxid committed under origin. */
void
concord_own_commit_note(FullTransactionId fxid, RepOriginId origin)
{
	if (!FullTransactionIdIsNormal(fxid) || origin == InvalidRepOriginId ||
		!lock_own_runs(LW_EXCLUSIVE))
		return;
	note_locked(fxid, origin);
	LWLockRelease(Runs->lock);
}

static void
note_locked(FullTransactionId fxid, RepOriginId origin)
{
	ConcordCommitRun *last;

	last = Runs->nruns > 0 ? &Runs->runs[Runs->nruns - 1] : NULL;
	if (last && U64FromFullTransactionId(fxid) < run_end(last))
	{
		/* The ids of one worker only grow; start over if they did not. */
		Runs->nruns = 0;
		last = NULL;
	}
	if (last && last->origin == origin &&
		run_end(last) == U64FromFullTransactionId(fxid) &&
		last->count < PG_UINT32_MAX)
	{
		last->count++;
		return;
	}
	if (Runs->nruns == CONCORD_COMMIT_RUNS)
	{
		/* Forget the oldest quarter at once: one move per 2048 new runs. */
		int			drop = CONCORD_COMMIT_RUNS / 4;

		memmove(Runs->runs, Runs->runs + drop,
				sizeof(ConcordCommitRun) * (CONCORD_COMMIT_RUNS - drop));
		Runs->nruns -= drop;
	}
	last = &Runs->runs[Runs->nruns];
	last->first = fxid;
	last->count = 1;
	last->origin = origin;
	Runs->nruns++;
}

/*
 * The full id of xid, taken as at most 2^32 - 1 transactions older than
 * newest; false if there is none.
 */
static bool
widen(TransactionId xid, FullTransactionId newest, FullTransactionId *result)
{
	uint32		epoch = EpochFromFullTransactionId(newest);

	if (xid > XidFromFullTransactionId(newest))
	{
		if (epoch == 0)
			return false;
		epoch--;
	}
	*result = FullTransactionIdFromEpochAndXid(epoch, xid);
	return true;
}

/* The run holding fxid, or NULL. */
static ConcordCommitRun *
find_run(FullTransactionId fxid)
{
	uint64		value = U64FromFullTransactionId(fxid);
	int			lo = 0;
	int			hi = Runs->nruns - 1;

	/* The last run starting at or before value. */
	while (lo < hi)
	{
		int			mid = lo + (hi - lo + 1) / 2;

		if (U64FromFullTransactionId(Runs->runs[mid].first) <= value)
			lo = mid;
		else
			hi = mid - 1;
	}
	if (U64FromFullTransactionId(Runs->runs[lo].first) <= value &&
		value < run_end(&Runs->runs[lo]))
		return &Runs->runs[lo];
	return NULL;
}

/*
 * True, with the origin it committed under, if this subscription's apply
 * worker committed transaction xid (and xid still names that transaction).
 */
bool
concord_own_commit_origin(TransactionId xid, RepOriginId *origin)
{
	bool		found;

	if (!TransactionIdIsNormal(xid) || !lock_own_runs(LW_SHARED))
		return false;
	found = origin_locked(xid, origin);
	LWLockRelease(Runs->lock);
	return found;
}

static bool
origin_locked(TransactionId xid, RepOriginId *origin)
{
	ConcordCommitRun *run;
	FullTransactionId newest;
	FullTransactionId fxid;

	if (Runs->nruns == 0)
		return false;
	newest = FullTransactionIdFromU64(run_end(&Runs->runs[Runs->nruns - 1]) - 1);
	if (!widen(xid, newest, &fxid))
		return false;
	run = find_run(fxid);
	if (run == NULL)
		return false;
	/* A newer transaction may carry the same 32-bit id by now. */
	if (U64FromFullTransactionId(ReadNextFullTransactionId()) -
		U64FromFullTransactionId(fxid) >= ((uint64) 1 << 31))
		return false;
	*origin = run->origin;
	return true;
}
