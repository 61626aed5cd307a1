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
 * seen past what node_c itself has applied of each origin: a row of
 * concord.causal_note (the applying transaction's xid, the origin, up to
 * which commit timestamp) in the applying transaction, kept until node_c
 * has applied that origin up to there.  A remote change that finds a row
 * version written by such a transaction, and is not newer than the note,
 * was seen by that version's writer: it is older, and skipped as the
 * writer's node skipped it (it applied it and then wrote over it), with
 * no conflict.
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
 * Confirmations and gap checks (tombstone_gc.c) keep using the applied
 * vector: knowing of a delete is not having applied it.  What is lost
 * (steps beyond CONCORD_KNOWN_STEPS, knowledge older than the last save
 * after a crash) only makes changes look concurrent, as they did before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "catalog/tables.h"
#include "conflict/known.h"
#include "conflict/seen.h"
#include "proto/proto.h"
#include "shmem/shmem.h"

#define NOTE_TABLE	"causal_note"

/* Knowledge noted in the transaction being applied, published at its commit. */
static List *Pending = NIL;

static SPIPlanPtr InsertPlan = NULL;
static SPIPlanPtr FindPlan = NULL;

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

static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

static void
insert_note(FullTransactionId fxid, const char *origin, TimestampTz upto)
{
	Oid			types[3] = {XID8OID, NAMEOID, TIMESTAMPTZOID};
	Datum		values[3];
	NameData	name;
	Oid			saved_user;
	int			saved_context;

	namestrcpy(&name, origin);
	values[0] = FullTransactionIdGetDatum(fxid);
	values[1] = NameGetDatum(&name);
	values[2] = TimestampTzGetDatum(upto);
	/* At the commit of the applied transaction, no statement is running. */
	PushActiveSnapshot(GetTransactionSnapshot());
	concord_catalog_become_owner(NOTE_TABLE, &saved_user, &saved_context);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (InsertPlan == NULL)
		InsertPlan = prepare_kept("INSERT INTO concord.causal_note (xact, origin, upto) "
								  "VALUES ($1, $2, $3) ON CONFLICT (xact, origin) "
								  "DO UPDATE SET upto = GREATEST(concord.causal_note.upto, EXCLUDED.upto)",
								  3, types);
	if (SPI_execute_plan(InsertPlan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record a causal note");
	SPI_finish();
	SetUserIdAndSecContext(saved_user, saved_context);
	PopActiveSnapshot();
}

/*
 * Before the commit of a remote transaction of writer: notes what its
 * writer knew (knowledge, the merged vector) past what this node applied,
 * for the versions it wrote, and keeps it to publish after the commit.
 * The writer's own origin and this node's are never behind here.
 */
void
concord_known_note(List *knowledge, const char *writer, const char *local_node)
{
	static bool registered = false;
	FullTransactionId fxid = GetTopFullTransactionIdIfAny();
	bool		table = OidIsValid(concord_catalog_relid(NOTE_TABLE, true));
	ListCell   *lc;

	if (!registered)
	{
		RegisterXactCallback(known_xact_callback, NULL);
		registered = true;
	}

	foreach(lc, knowledge)
	{
		ConcordSeenEntry *e = lfirst(lc);
		MemoryContext oldcxt;
		ConcordSeenEntry *keep;

		if (strcmp(e->origin, writer) == 0 || strcmp(e->origin, local_node) == 0 ||
			e->commit_ts <= concord_seen_local(e->origin))
			continue;
		if (FullTransactionIdIsValid(fxid) && table)
			insert_note(fxid, e->origin, e->commit_ts);
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		keep = palloc(sizeof(ConcordSeenEntry));
		keep->origin = pstrdup(e->origin);
		keep->commit_ts = e->commit_ts;
		Pending = lappend(Pending, keep);
		MemoryContextSwitchTo(oldcxt);
	}
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
 * After the commit (the applied transaction is visible): the knowledge
 * noted becomes this node's, for the local transactions that start
 * writing from now on.
 */
static void
publish(void)
{
	bool		raised = false;
	ListCell   *lc;

	if (Pending == NIL)
		return;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	foreach(lc, Pending)
	{
		ConcordSeenEntry *e = lfirst(lc);

		raised |= raise_locked(e->origin, e->commit_ts);
	}
	LWLockRelease(ConcordShmem->lock);
	if (raised)
		pg_atomic_fetch_add_u64(&ConcordShmem->seen_generation, 1);
}

static void
known_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_COMMIT && Pending != NIL)
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

/* What the writer of the remote transaction applied as xid knew of origin. */
static TimestampTz
noted_knowledge(FullTransactionId fxid, const char *origin)
{
	Oid			types[2] = {XID8OID, NAMEOID};
	Datum		values[2];
	NameData	name;
	TimestampTz upto = 0;
	Oid			saved_user;
	int			saved_context;

	if (!OidIsValid(concord_catalog_relid(NOTE_TABLE, true)))
		return 0;
	namestrcpy(&name, origin);
	values[0] = FullTransactionIdGetDatum(fxid);
	values[1] = NameGetDatum(&name);
	concord_catalog_become_owner(NOTE_TABLE, &saved_user, &saved_context);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (FindPlan == NULL)
		FindPlan = prepare_kept("SELECT upto FROM concord.causal_note "
								"WHERE xact = $1 AND origin = $2", 2, types);
	/* Not read-only: a fresh snapshot sees a note committed meanwhile. */
	if (SPI_execute_plan(FindPlan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read a causal note");
	if (SPI_processed == 1)
	{
		bool		isnull;

		upto = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	SetUserIdAndSecContext(saved_user, saved_context);
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
 * The manager's periodic cleanup, in its transaction: notes that what this
 * node applied since covers go, and so do the steps.  After a restart,
 * known_ts comes back from the notes still there (the steps do not: the
 * local transactions before the restart are credited with nothing).
 */
void
concord_known_prune(void)
{
	int			n = known_entries();
	Datum	   *origins = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *times = palloc(sizeof(Datum) * Max(n, 1));
	int			used = 0;
	Oid			types[2] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		values[2];
	bool		raised = false;

	if (!OidIsValid(concord_catalog_relid(NOTE_TABLE, true)))
		return;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		ConcordSeenState *s = &ConcordShmem->seen[i];

		if (s->dboid != MyDatabaseId)
			continue;
		origins[used] = CStringGetTextDatum(s->origin);
		times[used++] = TimestampTzGetDatum(s->commit_ts);
	}
	for (int i = 0; i < n; i++)
		if (ConcordShmem->known[i].dboid == MyDatabaseId)
			trim_entry(&ConcordShmem->known[i]);
	LWLockRelease(ConcordShmem->lock);
	values[0] = PointerGetDatum(construct_array(origins, used, TEXTOID, -1, false,
												TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(times, used, TIMESTAMPTZOID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("DELETE FROM concord.causal_note n "
							  "USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS a(origin, upto) "
							  "WHERE n.origin OPERATOR(pg_catalog.=) a.origin "
							  "AND n.upto OPERATOR(pg_catalog.<=) a.upto",
							  2, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not remove causal notes");
	if (SPI_execute("SELECT origin::pg_catalog.text, pg_catalog.max(upto) "
					"FROM concord.causal_note GROUP BY origin", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read causal notes");
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *origin = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1, &isnull));
		TimestampTz upto = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i],
															 SPI_tuptable->tupdesc, 2, &isnull));

		raised |= raise_locked(origin, upto);
	}
	LWLockRelease(ConcordShmem->lock);
	SPI_finish();
	if (raised)
		pg_atomic_fetch_add_u64(&ConcordShmem->seen_generation, 1);
}
