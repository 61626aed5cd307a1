/*-------------------------------------------------------------------------
 *
 * position.c
 *		What this node holds of each origin node, by the origin's own WAL
 *		positions.
 *
 * A causal token (api/token_api.c) names, per node, an end LSN in that
 * node's WAL: everything the node committed up to there.  Of the
 * transactions it applied, a node knows that position from two places:
 * for a subscription's provider, the progress of the subscription's origin
 * for the provider (the provider's own LSNs, flushed with each applied
 * commit); for a node whose transactions a subscription receives
 * forwarded, the origin LSN each one carries (protocol version 3), kept
 * here per (subscription, origin node) with the provider's end LSN of the
 * same transaction.  Apply announces each before its commit and records
 * it after, so that a token taken once the rows are visible names them
 * and a wait counts them only once they are.
 *
 * The entries are saved to a file with the causality vectors (seen.c, by
 * the launcher, every few seconds and at shutdown) and loaded at startup,
 * not live: one is exact only while its provider LSN equals the progress
 * of its origin, which the crash may have moved past it (a newer
 * transaction applied after the save: the loaded origin LSN is only a
 * lower bound) or left behind it (the saved transaction was lost with the
 * asynchronous commit: only an upper bound).  token_api.c decides which.
 *
 * Also here, per database, the end of the newest commit of a session that
 * wrote rows (not a concord worker): what a token names of this node
 * itself.  Not saved; after a restart, and while a session is committing,
 * a token names the current WAL position instead.
 *
 * The file is written by the launcher every few seconds and at its exit,
 * and by each apply worker at its exit, after its last commit: after a
 * clean stop it holds every entry as it was last.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "miscadmin.h"
#include "storage/lwlock.h"

#include "shmem/position.h"

#define POSITION_FILE		"concord_position.state"
#define POSITION_FILE_TMP	"concord_position.state.tmp"
#define POSITION_MAGIC		0x434F4E50	/* "CONP" */

static int
position_slots(void)
{
	return ConcordShmem->max_entries * CONCORD_POSITIONS_PER_ENTRY;
}

static bool
position_is(ConcordPositionState *e, Oid subid, const char *origin)
{
	return e->dboid == MyDatabaseId && e->subid == subid &&
		strcmp(e->origin, origin) == 0;
}

/*
 * The entry of (subid, origin) in this database, taken if need be: a free
 * one, or that of a subscription whose workers have no state any more
 * (dropped, or stopped for long).  NULL when none is left: the origin is
 * then not recorded, and tokens cannot name it here (token_api.c).
 * Caller holds the lock exclusively.
 */
static ConcordPositionState *
position_entry(Oid subid, const char *origin)
{
	static ConcordPositionState *last_entry = NULL;
	ConcordPositionState *free_entry = NULL;
	ConcordPositionState *stale_entry = NULL;

	if (last_entry && position_is(last_entry, subid, origin))
		return last_entry;
	for (int i = 0; i < position_slots(); i++)
	{
		ConcordPositionState *e = &ConcordShmem->positions[i];

		if (position_is(e, subid, origin))
			return last_entry = e;
		if (!OidIsValid(e->dboid))
		{
			if (free_entry == NULL)
				free_entry = e;
		}
		else if (stale_entry == NULL &&
				 concord_sub_state(e->dboid, e->subid, false) == NULL)
			stale_entry = e;
	}
	last_entry = free_entry ? free_entry : stale_entry;
	if (last_entry)
	{
		memset(last_entry, 0, sizeof(ConcordPositionState));
		last_entry->dboid = MyDatabaseId;
		last_entry->subid = subid;
		strlcpy(last_entry->origin, origin, NAMEDATALEN);
		last_entry->live = true;
	}
	return last_entry;
}

/*
 * Apply is about to commit a transaction of origin, forwarded by the
 * provider of subid: path_lsn on the provider; with has_origin_lsn, its
 * end LSN on the origin node, or 0 for an initial copy, which holds none
 * of the origin's transactions (what is known of the origin then stays,
 * known if it was exact: the entry live, or saved at the origin's
 * progress before this commit, prev_progress).  Within one subscription
 * an origin's transactions arrive in its commit order, so the newest is
 * all there is to know.  Set before the commit, so that a token taken once
 * the rows are visible names them.
 */
void
concord_position_committing(Oid subid, const char *origin, XLogRecPtr path_lsn,
							XLogRecPtr origin_lsn, bool has_origin_lsn,
							XLogRecPtr prev_progress)
{
	ConcordPositionState *e;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	e = position_entry(subid, origin);
	if (e)
	{
		bool		exact = e->live || e->path_lsn == prev_progress;

		e->pending_path_lsn = path_lsn;
		e->pending_origin_lsn = origin_lsn;
		e->pending_known = has_origin_lsn;
		if (has_origin_lsn && XLogRecPtrIsInvalid(origin_lsn))
		{
			e->pending_origin_lsn = e->origin_lsn;
			e->pending_known = exact &&
				(e->origin_known || XLogRecPtrIsInvalid(e->path_lsn));
		}
	}
	LWLockRelease(ConcordShmem->lock);
}

/* The transaction concord_position_committing() announced committed. */
void
concord_position_committed(Oid subid, const char *origin)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < position_slots(); i++)
	{
		ConcordPositionState *e = &ConcordShmem->positions[i];

		if (position_is(e, subid, origin) &&
			!XLogRecPtrIsInvalid(e->pending_path_lsn))
		{
			e->path_lsn = e->pending_path_lsn;
			e->origin_lsn = e->pending_origin_lsn;
			e->origin_known = e->pending_known;
			e->pending_path_lsn = InvalidXLogRecPtr;
			e->live = true;
			break;
		}
	}
	LWLockRelease(ConcordShmem->lock);
}

/*
 * A MARK of origin arrived through subid (after everything before it):
 * this node holds the origin's commits up to lsn.  True if that is more
 * than it knew (the mark is then worth passing on).
 */
bool
concord_position_marked(Oid subid, const char *origin, XLogRecPtr lsn)
{
	ConcordPositionState *e;
	bool		more = false;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	e = position_entry(subid, origin);
	if (e && lsn > e->mark_lsn)
	{
		e->mark_lsn = lsn;
		more = true;
	}
	LWLockRelease(ConcordShmem->lock);
	return more;
}

/* The origins this database keeps an entry of for subid, as names. */
List *
concord_position_origins(Oid subid)
{
	List	   *origins = NIL;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < position_slots(); i++)
	{
		ConcordPositionState *e = &ConcordShmem->positions[i];

		if (e->dboid == MyDatabaseId && e->subid == subid)
			origins = lappend(origins, pstrdup(e->origin));
	}
	LWLockRelease(ConcordShmem->lock);
	return origins;
}

/* A copy of the entry of (subid, origin) in this database; false if none. */
bool
concord_position_lookup(Oid subid, const char *origin, ConcordPositionState *out)
{
	bool		found = false;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < position_slots() && !found; i++)
	{
		ConcordPositionState *e = &ConcordShmem->positions[i];

		if (position_is(e, subid, origin))
		{
			*out = *e;
			found = true;
		}
	}
	LWLockRelease(ConcordShmem->lock);
	return found;
}

/*
 * This database's entry of sessions' commits, taken at the first use;
 * NULL if none is left (tokens then name the WAL position).
 */
static ConcordLocalCommits *
my_local_commits(void)
{
	static ConcordLocalCommits *mine = NULL;
	static bool tried = false;
	int			n = ConcordShmem->max_entries * CONCORD_LOCAL_COMMITS_PER_ENTRY;

	if (tried)
		return mine;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n && mine == NULL; i++)
		if (ConcordShmem->local_commits[i].dboid == MyDatabaseId)
			mine = &ConcordShmem->local_commits[i];
	for (int i = 0; i < n && mine == NULL; i++)
		if (!OidIsValid(ConcordShmem->local_commits[i].dboid))
		{
			mine = &ConcordShmem->local_commits[i];
			mine->dboid = MyDatabaseId;
		}
	LWLockRelease(ConcordShmem->lock);
	tried = true;
	return mine;
}

/*
 * A session's writing transaction starts or stops committing: from before
 * its commit record is written to after concord_position_local_commit()
 * noted it, a token names the WAL position instead.
 */
void
concord_position_committing_locally(bool start)
{
	ConcordLocalCommits *lc = my_local_commits();

	if (lc == NULL)
		return;
	if (start)
		(void) pg_atomic_fetch_add_u32(&lc->committing, 1);
	else
		(void) pg_atomic_fetch_sub_u32(&lc->committing, 1);
}

/*
 * Whether a MARK of this node at lsn tells more than the last one this
 * database logged (one at or past lsn covers it); it is then the last.
 */
bool
concord_position_mark_due(XLogRecPtr lsn)
{
	ConcordLocalCommits *lc = my_local_commits();
	uint64		known;

	if (lc == NULL)
		return true;
	known = pg_atomic_read_u64(&lc->last_mark);
	while (known < lsn)
		if (pg_atomic_compare_exchange_u64(&lc->last_mark, &known, lsn))
			return true;
	return false;
}

/* A session of this database committed a transaction ending at end_lsn. */
void
concord_position_local_commit(XLogRecPtr end_lsn)
{
	ConcordLocalCommits *lc = my_local_commits();
	uint64		known;

	if (lc == NULL)
		return;
	known = pg_atomic_read_u64(&lc->end_lsn);
	while (known < end_lsn &&
		   !pg_atomic_compare_exchange_u64(&lc->end_lsn, &known, end_lsn))
		;
}

/*
 * A WAL position just past the header of a page that holds nothing yet
 * (GetXLogInsertRecPtr() there) names no more WAL than the page's start,
 * which is where the provider's WAL sender says its WAL ends until a
 * record is written on that page: a wait for the former would last until
 * then.  (A position past a segment's long page header is left: on
 * another page, the same offset can end a record.)
 */
XLogRecPtr
concord_wal_position_trimmed(XLogRecPtr lsn)
{
	if (lsn % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return lsn - SizeOfXLogShortPHD;
	return lsn;
}

/*
 * The end of the newest commit of a session of this database: at least
 * that of every commit visible now.  While one is committing, or when none
 * is known (since startup, or no entry), the current WAL position.
 */
XLogRecPtr
concord_position_local_end(void)
{
	ConcordLocalCommits *lc = my_local_commits();
	XLogRecPtr	end;

	if (lc == NULL)
		return concord_wal_position_trimmed(GetXLogInsertRecPtr());
	/* the count first: a commit noted its end before it left the count */
	if (pg_atomic_read_u32(&lc->committing) > 0)
		return concord_wal_position_trimmed(GetXLogInsertRecPtr());
	pg_memory_barrier();
	end = pg_atomic_read_u64(&lc->end_lsn);
	return XLogRecPtrIsInvalid(end) ?
		concord_wal_position_trimmed(GetXLogInsertRecPtr()) : end;
}

/* Writes the entries of every database to the state file, if they moved. */
void
concord_position_save(void)
{
	static ConcordPositionState *saved = NULL;
	static int	nsaved = -1;
	ConcordPositionState *copy;
	int			used = 0;

	/* Writers one at a time, each with a copy taken once it is its turn. */
	LWLockAcquire(ConcordShmem->state_file_lock, LW_EXCLUSIVE);
	copy = palloc(sizeof(ConcordPositionState) * position_slots());
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < position_slots(); i++)
		if (OidIsValid(ConcordShmem->positions[i].dboid))
			copy[used++] = ConcordShmem->positions[i];
	LWLockRelease(ConcordShmem->lock);
	for (int i = 0; i < used; i++)
	{
		copy[i].live = false;
		copy[i].pending_path_lsn = InvalidXLogRecPtr;
		copy[i].mark_lsn = InvalidXLogRecPtr;
	}
	if ((used == nsaved &&
		 memcmp(copy, saved, sizeof(ConcordPositionState) * used) == 0) ||
		!concord_state_file_write(POSITION_FILE, POSITION_FILE_TMP,
								  POSITION_MAGIC, copy,
								  sizeof(ConcordPositionState), used))
	{
		LWLockRelease(ConcordShmem->state_file_lock);
		pfree(copy);
		return;
	}
	LWLockRelease(ConcordShmem->state_file_lock);
	if (saved)
		free(saved);
	saved = malloc(sizeof(ConcordPositionState) * Max(used, 1));
	if (saved == NULL)
		nsaved = -1;
	else
	{
		memcpy(saved, copy, sizeof(ConcordPositionState) * used);
		nsaved = used;
	}
	pfree(copy);
}

/* At startup (postmaster): the entries saved last, not live. */
void
concord_position_load(void)
{
	int			n = concord_state_file_read(POSITION_FILE, POSITION_MAGIC,
											ConcordShmem->positions,
											sizeof(ConcordPositionState),
											position_slots());

	for (int i = 0; i < n; i++)
	{
		ConcordShmem->positions[i].origin[NAMEDATALEN - 1] = '\0';
		ConcordShmem->positions[i].live = false;
		ConcordShmem->positions[i].pending_path_lsn = InvalidXLogRecPtr;
		ConcordShmem->positions[i].mark_lsn = InvalidXLogRecPtr;
	}
}
