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
 * same transaction.  Apply records the latest after each commit.
 *
 * The entries are saved to a file with the causality vectors (seen.c, by
 * the launcher, every few seconds and at shutdown) and loaded at startup,
 * not live: one is exact only while its provider LSN equals the progress
 * of its origin, which the crash may have moved past it (a newer
 * transaction applied after the save: the loaded origin LSN is only a
 * lower bound) or left behind it (the saved transaction was lost with the
 * asynchronous commit: only an upper bound).  token_api.c decides which.
 *
 * Also here, per database, the end of the newest commit a session (not a
 * concord worker) wrote: what a token names of this node itself.  Not
 * saved; after a restart a token names the current WAL position instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
 * Apply committed a transaction of origin, forwarded by the provider of
 * subid: path_lsn on the provider, origin_lsn on the origin node.  Within
 * one subscription an origin's transactions arrive in its commit order, so
 * the newest is all there is to know.  Without a free entry it is not
 * recorded, and tokens cannot name this origin here (token_api.c).
 */
void
concord_position_applied(Oid subid, const char *origin, XLogRecPtr path_lsn,
						 XLogRecPtr origin_lsn)
{
	static ConcordPositionState *last_entry = NULL;
	ConcordPositionState *entry = NULL;
	ConcordPositionState *free_entry = NULL;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	if (last_entry && position_is(last_entry, subid, origin))
		entry = last_entry;
	for (int i = 0; i < position_slots() && entry == NULL; i++)
	{
		ConcordPositionState *e = &ConcordShmem->positions[i];

		if (position_is(e, subid, origin))
			entry = e;
		else if (!OidIsValid(e->dboid) && free_entry == NULL)
			free_entry = e;
	}
	if (entry == NULL && free_entry != NULL)
	{
		entry = free_entry;
		entry->dboid = MyDatabaseId;
		entry->subid = subid;
		strlcpy(entry->origin, origin, NAMEDATALEN);
	}
	if (entry)
	{
		entry->path_lsn = path_lsn;
		entry->origin_lsn = origin_lsn;
		entry->live = true;
	}
	last_entry = entry;
	LWLockRelease(ConcordShmem->lock);
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

/* Frees this database's entries of subscriptions not in subids (Oids). */
void
concord_position_prune(List *subids)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < position_slots(); i++)
	{
		ConcordPositionState *e = &ConcordShmem->positions[i];

		if (e->dboid == MyDatabaseId && !list_member_oid(subids, e->subid))
			memset(e, 0, sizeof(ConcordPositionState));
	}
	LWLockRelease(ConcordShmem->lock);
}

/* This database's entry, found once per backend; NULL if it has none. */
static ConcordDbState *
my_db_state(void)
{
	static ConcordDbState *db = NULL;

	if (db != NULL && db->dboid == MyDatabaseId)
		return db;
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	db = concord_db_state(MyDatabaseId, false);
	LWLockRelease(ConcordShmem->lock);
	return db;
}

/* A session of this database committed a transaction ending at end_lsn. */
void
concord_position_local_commit(XLogRecPtr end_lsn)
{
	ConcordDbState *db = my_db_state();
	uint64		known;

	if (db == NULL)
		return;
	known = pg_atomic_read_u64(&db->local_commit_end);
	while (known < end_lsn &&
		   !pg_atomic_compare_exchange_u64(&db->local_commit_end, &known, end_lsn))
		;
}

/* The end of the newest commit of a session of this database, if known. */
XLogRecPtr
concord_position_local_end(void)
{
	ConcordDbState *db = my_db_state();

	return db ? pg_atomic_read_u64(&db->local_commit_end) : InvalidXLogRecPtr;
}

/* Writes the entries of every database to the state file, if they moved. */
void
concord_position_save(void)
{
	static ConcordPositionState *saved = NULL;
	static int	nsaved = -1;
	ConcordPositionState *copy;
	int			used = 0;

	copy = palloc(sizeof(ConcordPositionState) * position_slots());
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < position_slots(); i++)
		if (OidIsValid(ConcordShmem->positions[i].dboid))
			copy[used++] = ConcordShmem->positions[i];
	LWLockRelease(ConcordShmem->lock);
	for (int i = 0; i < used; i++)
		copy[i].live = false;
	if (used == nsaved &&
		memcmp(copy, saved, sizeof(ConcordPositionState) * used) == 0)
	{
		pfree(copy);
		return;
	}
	if (!concord_state_file_write(POSITION_FILE, POSITION_FILE_TMP,
								  POSITION_MAGIC, copy,
								  sizeof(ConcordPositionState), used))
	{
		pfree(copy);
		return;
	}
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
	}
}
