/*-------------------------------------------------------------------------
 *
 * known.c
 *		Knowledge of changes that have not arrived yet.
 *
 * With more than two nodes a change can arrive after a later change that
 * followed it: node_a updates a row (v1), node_b applies v1 and updates
 * the row again (v2), node_c receives v2 first and v1 later, its link
 * from node_a being slower.  v1 is then older than the version node_c
 * holds, but the SEEN vector of v1 (seen.c) only says that its writer had
 * not seen v2, which makes them look concurrent: a resolver that is not
 * last_update_wins (first_update_wins, replica_priority, a handler) would
 * let v1 win on node_c, where node_a and node_b kept v2.
 *
 * So node_c keeps what the writers of the transactions it applies had
 * seen past what node_c itself has applied of each origin: a note (the
 * applying transaction's xid, the origin, up to which commit timestamp),
 * in a ring in shared memory, written as that transaction commits.  A
 * note is needed only until node_c has applied that origin up to there,
 * which is mostly a matter of milliseconds; the ring overwrites the
 * oldest first.  A remote change that finds a row version written by such
 * a transaction, and is not newer than the note, was seen by that
 * version's writer: it is older, and skipped as the writer's node skipped
 * it (it applied it and then wrote over it), with no conflict.
 *
 * Local transactions of node_c after such an apply have seen v1 as much
 * (through v2): node_c's vector of knowledge (known_ts per origin, in
 * shared memory) rises with each note, and local writers ship it in their
 * SEEN message after the applied vector (proto.c), so that other nodes
 * take them as later than v1 too; forwarded transactions keep their
 * writer's.  A local row version is credited with that knowledge by its
 * xid: steps (from xid, up to timestamp) are recorded when known_ts
 * rises, after it is published, and seen.c takes a transaction's xid
 * before it reads the vector it logs, so a transaction whose xid is at
 * least a step's was logged with at least the step's knowledge.
 *
 * The claims are consistent by construction: what a version is credited
 * with here is what its writer's SEEN message says everywhere.
 * Confirmations and gap checks (tombstone_gc.c) keep using the applied
 * vector: knowing of a delete is not having applied it.  What is lost
 * (notes the ring overwrote while a link lagged long, steps beyond
 * CONCORD_KNOWN_STEPS, what changed since the last save before a crash:
 * seen.c saves it with the vector) only makes changes look concurrent, as
 * they did before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "conflict/known.h"
#include "conflict/seen.h"
#include "proto/proto.h"
#include "shmem/shmem.h"

/* Knowledge noted in the transaction being applied, published at its commit. */
static List *Pending = NIL;
static FullTransactionId PendingXact;

static void known_xact_callback(XactEvent event, void *arg);

static int
known_entries(void)
{
	return ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY;
}

/* This database's entry for origin; with create, a free one taken. */
static ConcordKnownState *
known_entry(const char *origin, bool create)
{
	ConcordKnownState *free_entry = NULL;

	for (int i = 0; i < known_entries(); i++)
	{
		ConcordKnownState *e = &ConcordShmem->known[i];

		if (e->dboid == MyDatabaseId && strcmp(e->origin, origin) == 0)
			return e;
		if (!OidIsValid(e->dboid) && free_entry == NULL)
			free_entry = e;
	}
	if (!create || free_entry == NULL)
		return NULL;
	memset(free_entry, 0, sizeof(ConcordKnownState));
	free_entry->dboid = MyDatabaseId;
	strlcpy(free_entry->origin, origin, NAMEDATALEN);
	return free_entry;
}

/* The applied vector's timestamp for origin; the caller holds the lock. */
static TimestampTz
applied_locked(const char *origin)
{
	for (int i = 0; i < known_entries(); i++)
	{
		ConcordSeenState *e = &ConcordShmem->seen[i];

		if (e->dboid == MyDatabaseId && strcmp(e->origin, origin) == 0)
			return e->commit_ts;
	}
	return 0;
}

/* Forgets steps (and the entry) that what was applied since covers. */
static void
trim_entry(ConcordKnownState *e)
{
	TimestampTz applied = applied_locked(e->origin);
	int			keep = 0;

	while (keep < e->nsteps && e->steps[keep].upto <= applied)
		keep++;
	/* The last step covered stays: it still credits later xids. */
	if (keep > 0 && keep == e->nsteps && e->known_ts > applied)
		keep--;
	if (keep > 0)
	{
		memmove(e->steps, e->steps + keep, sizeof(ConcordKnownStep) * (e->nsteps - keep));
		e->nsteps -= keep;
	}
	if (e->known_ts <= applied)
		e->dboid = InvalidOid;
}

/*
 * This database's knowledge past what it applied: (origin, timestamp)
 * entries for SEEN (seen.c).  NIL when it knows nothing more.
 */
List *
concord_known_excess(void)
{
	List	   *entries = NIL;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < known_entries(); i++)
	{
		ConcordKnownState *e = &ConcordShmem->known[i];
		ConcordSeenEntry *copy;

		if (e->dboid != MyDatabaseId || e->known_ts <= applied_locked(e->origin))
			continue;
		copy = palloc(sizeof(ConcordSeenEntry));
		copy->origin = pstrdup(e->origin);
		copy->commit_ts = e->known_ts;
		entries = lappend(entries, copy);
	}
	LWLockRelease(ConcordShmem->lock);
	return entries;
}

/* A remote writer's knowledge: its applied vector raised by its excess. */
List *
concord_known_merge(List *applied, List *known)
{
	List	   *merged = list_copy(applied);
	ListCell   *lc;

	foreach(lc, known)
	{
		ConcordSeenEntry *k = lfirst(lc);
		ListCell   *lc2;
		bool		found = false;

		foreach(lc2, merged)
		{
			ConcordSeenEntry *e = lfirst(lc2);

			if (strcmp(e->origin, k->origin) != 0)
				continue;
			found = true;
			if (k->commit_ts > e->commit_ts)
			{
				ConcordSeenEntry *raised = palloc(sizeof(ConcordSeenEntry));

				raised->origin = e->origin;
				raised->commit_ts = k->commit_ts;
				lfirst(lc2) = raised;
			}
		}
		if (!found)
			merged = lappend(merged, k);
	}
	return merged;
}

/*
 * Before the commit of a remote transaction of writer: keeps what its
 * writer knew (knowledge, the merged vector) past what this node applied,
 * to note for the versions it wrote and publish as the transaction
 * commits.  The writer's own origin and this node's are never behind here.
 */
void
concord_known_note(List *knowledge, const char *writer, const char *local_node)
{
	static bool registered = false;
	ListCell   *lc;

	if (!registered)
	{
		RegisterXactCallback(known_xact_callback, NULL);
		registered = true;
	}
	PendingXact = GetTopFullTransactionIdIfAny();
	foreach(lc, knowledge)
	{
		ConcordSeenEntry *e = lfirst(lc);
		MemoryContext oldcxt;
		ConcordSeenEntry *keep;

		if (strcmp(e->origin, writer) == 0 || strcmp(e->origin, local_node) == 0 ||
			e->commit_ts <= concord_seen_local(e->origin))
			continue;
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		keep = palloc(sizeof(ConcordSeenEntry));
		keep->origin = pstrdup(e->origin);
		keep->commit_ts = e->commit_ts;
		Pending = lappend(Pending, keep);
		MemoryContextSwitchTo(oldcxt);
	}
}

static int
note_entries(void)
{
	return ConcordShmem->max_entries * CONCORD_NOTES_PER_ENTRY;
}

/* Notes that xact knew origin up to upto; the caller holds the lock. */
static void
note_locked(FullTransactionId xact, const char *origin, TimestampTz upto)
{
	ConcordCausalNote *n = &ConcordShmem->notes[ConcordShmem->next_note];

	ConcordShmem->next_note = (ConcordShmem->next_note + 1) % note_entries();
	n->dboid = MyDatabaseId;
	n->xact = xact;
	strlcpy(n->origin, origin, NAMEDATALEN);
	n->upto = upto;
}

/* Raises known_ts of origin to upto; the caller holds the lock. */
static bool
raise_locked(const char *origin, TimestampTz upto)
{
	ConcordKnownState *e = known_entry(origin, true);

	if (e == NULL || upto <= e->known_ts)
		return false;
	e->known_ts = upto;
	trim_entry(e);
	if (!OidIsValid(e->dboid))
		return false;
	if (e->nsteps == CONCORD_KNOWN_STEPS)
	{
		/* The oldest step goes: its xids are credited with less. */
		memmove(e->steps, e->steps + 1, sizeof(ConcordKnownStep) * (e->nsteps - 1));
		e->nsteps--;
	}
	/* Read after known_ts is published (seen.c reads them the other way). */
	e->steps[e->nsteps].from = ReadNextFullTransactionId();
	e->steps[e->nsteps].upto = upto;
	e->nsteps++;
	return true;
}

/*
 * As the applied transaction commits (before it is visible: a note of a
 * transaction that then fails to commit names no row version): the notes
 * of its versions, and its writer's knowledge becomes this node's, for the
 * local transactions that take their xid from now on.
 */
static void
publish(void)
{
	bool		raised = false;
	ListCell   *lc;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	foreach(lc, Pending)
	{
		ConcordSeenEntry *e = lfirst(lc);

		if (FullTransactionIdIsValid(PendingXact))
			note_locked(PendingXact, e->origin, e->commit_ts);
		raised |= raise_locked(e->origin, e->commit_ts);
	}
	LWLockRelease(ConcordShmem->lock);
	if (raised)
		pg_atomic_fetch_add_u64(&ConcordShmem->seen_generation, 1);
}

static void
known_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_PRE_COMMIT && Pending != NIL)
		publish();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
	{
		list_free_deep(Pending);
		Pending = NIL;
	}
}

/* The full xid of a recent xid (one of a row version being looked at). */
static FullTransactionId
full_xid(TransactionId xid)
{
	FullTransactionId next = ReadNextFullTransactionId();
	uint32		epoch = EpochFromFullTransactionId(next);

	if (xid >= XidFromFullTransactionId(next) && epoch > 0)
		epoch--;
	return FullTransactionIdFromEpochAndXid(epoch, xid);
}

/* What a local transaction xid knew of origin, by the steps. */
static TimestampTz
local_knowledge(FullTransactionId fxid, const char *origin)
{
	TimestampTz upto = 0;
	ConcordKnownState *e;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	e = known_entry(origin, false);
	for (int i = 0; e && i < e->nsteps; i++)
		if (FullTransactionIdFollowsOrEquals(fxid, e->steps[i].from))
			upto = e->steps[i].upto;
	LWLockRelease(ConcordShmem->lock);
	return upto;
}

/* What the writer of the remote transaction applied as xact knew of origin. */
static TimestampTz
noted_knowledge(FullTransactionId xact, const char *origin)
{
	TimestampTz upto = 0;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < note_entries(); i++)
	{
		ConcordCausalNote *n = &ConcordShmem->notes[i];

		if (n->dboid == MyDatabaseId &&
			FullTransactionIdEquals(n->xact, xact) &&
			strcmp(n->origin, origin) == 0)
			upto = Max(upto, n->upto);
	}
	LWLockRelease(ConcordShmem->lock);
	return upto;
}

/*
 * What the writer of the version written here by transaction xid knew of
 * origin: the commit timestamp up to which it had seen origin's changes
 * that had not arrived here, 0 if nothing is known.  written_here: the
 * version is a local transaction's (not one apply wrote).
 */
TimestampTz
concord_known_by(TransactionId xid, bool written_here, const char *origin)
{
	FullTransactionId fxid;

	if (!TransactionIdIsNormal(xid))
		return 0;
	fxid = full_xid(xid);
	return written_here ? local_knowledge(fxid, origin) :
		noted_knowledge(fxid, origin);
}

/*
 * The state file (seen.c): the knowledge entries and the notes, after
 * the vectors, while the caller holds the lock.  Their xids stay valid
 * across a restart.
 */
void
concord_known_save(FILE *f)
{
	uint32		counts[2] = {0, 0};

	for (int i = 0; i < known_entries(); i++)
		if (OidIsValid(ConcordShmem->known[i].dboid))
			counts[0]++;
	for (int i = 0; i < note_entries(); i++)
		if (OidIsValid(ConcordShmem->notes[i].dboid))
			counts[1]++;
	fwrite(counts, sizeof(counts), 1, f);
	for (int i = 0; i < known_entries(); i++)
		if (OidIsValid(ConcordShmem->known[i].dboid))
			fwrite(&ConcordShmem->known[i], sizeof(ConcordKnownState), 1, f);
	for (int i = 0; i < note_entries(); i++)
		if (OidIsValid(ConcordShmem->notes[i].dboid))
			fwrite(&ConcordShmem->notes[i], sizeof(ConcordCausalNote), 1, f);
}

/* At startup (postmaster), after the vectors: what concord_known_save() wrote. */
void
concord_known_load(FILE *f)
{
	uint32		counts[2];
	ConcordKnownState known;
	ConcordCausalNote note;

	if (fread(counts, sizeof(counts), 1, f) != 1)
		return;
	for (uint32 i = 0; i < counts[0] && fread(&known, sizeof(known), 1, f) == 1; i++)
	{
		if ((int) i >= known_entries())
			continue;
		known.origin[NAMEDATALEN - 1] = '\0';
		known.nsteps = Max(Min(known.nsteps, CONCORD_KNOWN_STEPS), 0);
		ConcordShmem->known[i] = known;
	}
	for (uint32 i = 0; i < counts[1] && fread(&note, sizeof(note), 1, f) == 1; i++)
	{
		if ((int) i >= note_entries())
			continue;
		note.origin[NAMEDATALEN - 1] = '\0';
		ConcordShmem->notes[i] = note;
	}
	ConcordShmem->next_note = Min(counts[1], (uint32) note_entries()) % note_entries();
}
