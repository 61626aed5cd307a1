/*-------------------------------------------------------------------------
 *
 * known.c
 *		What the writers of applied transactions had seen: older changes.
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
 * So node_c notes, as it commits a remote transaction, what its writer
 * had applied past what node_c has applied of each origin: (the applying
 * transaction's xid, the origin, up to which commit timestamp), in a ring
 * in shared memory.  A remote change of that origin that finds a row
 * version written by that transaction, and is not newer than the note,
 * was seen by the version's writer: it is older, and skipped as every
 * other node skipped it (it applied it first and the version over it, or
 * met the version as one its writer had seen), with no conflict.
 *
 * The judgement must be the same on every node, so the credit given to a
 * version here must never exceed what the other nodes judge its changes
 * by: the SEEN vector in effect for each of them.  A transaction that logs
 * its vector again before a later statement (seen.c) has rows judged by
 * the first vector and rows judged by a later one: the note takes the
 * vector in effect at its first change, the least; a transaction in which
 * apply also deleted rows of its own (a unique conflict's rivals) is not
 * noted.  Less credit here only makes the late change look concurrent, as
 * it did before, and the resolver decides: so do the notes the ring
 * overwrote while a link lagged long behind the others, and those written
 * after the last save before a crash (saved with the SEEN vector, every
 * few seconds and at shutdown).  Local transactions are not credited:
 * what they knew through the versions they read is not in their SEEN
 * vector, so a late change meets a local write as a concurrent one.
 *
 * A note is needed only until node_c has applied that origin up to it,
 * mostly a matter of milliseconds: a new note takes a spent slot first,
 * else the oldest.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "catalog/origin.h"
#include "conflict/known.h"
#include "conflict/seen.h"
#include "proto/proto.h"
#include "shmem/shmem.h"

/* The notes of the transaction being applied, written as it commits. */
typedef struct PendingNote
{
	NameData	origin;
	TimestampTz upto;
} PendingNote;

static List *Pending = NIL;
static FullTransactionId PendingXact;
static NameData PendingWriter;
static TimestampTz PendingCommitTs;

/* How many slots from the next one a note looks at for a spent one. */
#define NOTE_PROBE	8

static int
note_entries(void)
{
	return ConcordShmem->max_entries * CONCORD_NOTES_PER_ENTRY;
}

/*
 * Whether a note can go: free, or spent (its database has applied its
 * origin up to it, so no change can be older than it any more).  The
 * caller holds the lock.
 */
static bool
note_spent(ConcordCausalNote *n)
{
	int			seen = ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY;

	if (!OidIsValid(n->dboid))
		return true;
	for (int i = 0; i < seen; i++)
	{
		ConcordSeenState *e = &ConcordShmem->seen[i];

		if (e->dboid == n->dboid && strcmp(e->origin, n->origin) == 0)
			return e->commit_ts >= n->upto;
	}
	return false;
}

/*
 * The slot for a new note: the first spent one of the next few, else the
 * next one, the oldest (its note is lost).  The caller holds the lock.
 */
static ConcordCausalNote *
take_slot(void)
{
	int			slot = ConcordShmem->next_note;

	for (int i = 0; i < NOTE_PROBE; i++)
	{
		int			probe = (ConcordShmem->next_note + i) % note_entries();

		if (note_spent(&ConcordShmem->notes[probe]))
		{
			slot = probe;
			break;
		}
	}
	/* The next one is the oldest of what the ring keeps. */
	if (slot == (int) ConcordShmem->next_note)
		ConcordShmem->next_note = (ConcordShmem->next_note + 1) % note_entries();
	ConcordShmem->notes_written++;
	return &ConcordShmem->notes[slot];
}

/* Writes the pending notes into the ring. */
static void
write_notes(void)
{
	ListCell   *lc;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	foreach(lc, Pending)
	{
		PendingNote *p = lfirst(lc);
		ConcordCausalNote *n = take_slot();

		n->dboid = MyDatabaseId;
		n->xact = PendingXact;
		strlcpy(n->writer, NameStr(PendingWriter), NAMEDATALEN);
		n->commit_ts = PendingCommitTs;
		strlcpy(n->origin, NameStr(p->origin), NAMEDATALEN);
		n->upto = p->upto;
	}
	LWLockRelease(ConcordShmem->lock);
}

/*
 * Before the commit (a note of a transaction that then fails to commit
 * names no row version): no window where the version is visible and its
 * note is not.
 */
static void
known_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_PRE_COMMIT && Pending != NIL)
		write_notes();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
	{
		list_free_deep(Pending);
		Pending = NIL;
	}
}

/*
 * Before the commit of a remote transaction of writer, committed there at
 * commit_ts, that wrote here: what the SEEN vector its changes were judged
 * by (seen: the one in effect at its first change, the least) holds past
 * what this node applied, for every origin but the writer and this node,
 * to note as it commits.
 */
void
concord_known_note(List *seen, const char *writer, TimestampTz commit_ts,
				   const char *local_node)
{
	static bool registered = false;
	ListCell   *lc;

	PendingXact = GetTopFullTransactionIdIfAny();
	if (!FullTransactionIdIsValid(PendingXact))
		return;
	namestrcpy(&PendingWriter, writer);
	PendingCommitTs = commit_ts;
	if (!registered)
	{
		RegisterXactCallback(known_xact_callback, NULL);
		registered = true;
	}
	foreach(lc, seen)
	{
		ConcordSeenEntry *e = lfirst(lc);
		PendingNote *p;

		if (strcmp(e->origin, writer) == 0 || strcmp(e->origin, local_node) == 0 ||
			e->commit_ts <= concord_seen_local(e->origin))
			continue;
		p = MemoryContextAlloc(TopMemoryContext, sizeof(PendingNote));
		namestrcpy(&p->origin, e->origin);
		p->upto = e->commit_ts;
		Pending = lappend(Pending, p);
	}
}

/*
 * What the writer of the remote transaction applied here as xid (of node
 * writer, committed at commit_ts: a note of an xid used again after a
 * crash or a restore does not match) had seen of origin, as noted: a
 * commit timestamp, 0 if nothing is noted.
 */
TimestampTz
concord_known_by(TransactionId xid, const char *writer, TimestampTz commit_ts,
				 const char *origin)
{
	FullTransactionId xact;
	TimestampTz upto = 0;

	if (!TransactionIdIsNormal(xid))
		return 0;
	xact = concord_recent_full_xid(xid);
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < note_entries(); i++)
	{
		ConcordCausalNote *n = &ConcordShmem->notes[i];

		if (n->dboid == MyDatabaseId &&
			FullTransactionIdEquals(n->xact, xact) &&
			n->commit_ts == commit_ts &&
			strcmp(n->writer, writer) == 0 &&
			strcmp(n->origin, origin) == 0)
			upto = Max(upto, n->upto);
	}
	LWLockRelease(ConcordShmem->lock);
	return upto;
}

#define NOTES_FILE		"concord_notes.state"
#define NOTES_FILE_TMP	"concord_notes.state.tmp"
#define NOTES_MAGIC		0x434F4E32	/* "CON2" */

static uint64 SavedWritten = 0;

/*
 * Writes the notes to their state file, if the ring moved (with the SEEN
 * vector: seen.c, in the launcher).  Their xids stay valid across a
 * restart.
 */
void
concord_known_save(void)
{
	uint64		written;
	ConcordCausalNote *copy;
	int			used = 0;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	written = ConcordShmem->notes_written;
	LWLockRelease(ConcordShmem->lock);
	if (written == SavedWritten)
		return;
	/* Oldest first, so that a load keeps the ring's order. */
	copy = palloc(sizeof(ConcordCausalNote) * note_entries());
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < note_entries(); i++)
	{
		ConcordCausalNote *n =
			&ConcordShmem->notes[(ConcordShmem->next_note + i) % note_entries()];

		if (OidIsValid(n->dboid))
			copy[used++] = *n;
	}
	LWLockRelease(ConcordShmem->lock);
	if (concord_state_file_write(NOTES_FILE, NOTES_FILE_TMP, NOTES_MAGIC, copy,
								 sizeof(ConcordCausalNote), used))
		SavedWritten = written;
	pfree(copy);
}

/* At startup (postmaster): the notes saved last. */
void
concord_known_load(void)
{
	int			used = concord_state_file_read(NOTES_FILE, NOTES_MAGIC,
											   ConcordShmem->notes,
											   sizeof(ConcordCausalNote),
											   note_entries());

	for (int i = 0; i < used; i++)
	{
		ConcordShmem->notes[i].origin[NAMEDATALEN - 1] = '\0';
		ConcordShmem->notes[i].writer[NAMEDATALEN - 1] = '\0';
	}
	ConcordShmem->next_note = used % note_entries();
}
