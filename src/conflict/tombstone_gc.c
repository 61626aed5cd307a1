/*-------------------------------------------------------------------------
 *
 * tombstone_gc.c
 *		Removing tombstones every peer has confirmed, and refusing the
 *		changes of a peer whose tombstones were removed without it.
 *
 * A tombstone (deleted key, with the version of the delete: commit
 * timestamp T and origin node O) is needed as long as a change concurrent
 * with the delete may still arrive.  A change from writer P is concurrent
 * with it iff P had not applied the delete when it wrote, that is iff the
 * SEEN vector of P's transaction (seen.c) holds less than T for O.  Apply
 * notes, per writer and origin, the newest SEEN value of the writer's
 * transactions it committed (shared memory: "confirmed").  The peers are
 * the nodes of concord.node and every origin applied here (a ring's far
 * nodes), but those that left (concord.departed_node).  Once every peer P but O has confirmed O past T (with a second of margin, commit
 * timestamps not being strictly in commit order), P's later transactions
 * cannot be concurrent with the delete any more, except one P had open
 * since before: concord.tombstone_gc_delay keeps every tombstone that
 * long at least, for those.  The manager removes such tombstones once a
 * minute (concord.tombstone_gc() does it at once).
 *
 * A peer that does not write confirms nothing.  concord.tombstone_retention
 * (0: forever) bounds how long tombstones wait: older ones are removed
 * anyway, and for each peer that had not confirmed them a row of
 * concord.tombstone_gap says up to when origin O's tombstones are gone.
 * From then on apply refuses a transaction of that peer whose SEEN vector
 * is behind the gap: it could bring back a deleted row or lose a delete,
 * and is never applied blindly; the error says to resynchronise.  A gap
 * row goes away once its peer has confirmed past it.
 *
 * Once the server's transaction counter has wrapped around, freezing
 * makes a tombstone's version unknown (conflict.c): such a tombstone can
 * only be removed, and no gap row can say what it was.  So after a
 * wraparound a tombstone not every peer confirmed is removed, with its
 * gap rows, before vacuum may freeze it: once it is older than half of
 * vacuum_freeze_min_age (or of the table's autovacuum_freeze_min_age),
 * whatever concord.tombstone_retention says.  One frozen sooner (VACUUM
 * FREEZE) still goes without a gap row, with a WARNING.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/vacuum.h"
#include "postmaster/autovacuum.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "concord.h"
#include "catalog/tables.h"
#include "conflict/conflict.h"
#include "conflict/seen.h"
#include "conflict/tombstone.h"
#include "conflict/tombstone_gc.h"
#include "proto/proto.h"
#include "shmem/shmem.h"

/*
 * What this process recorded last, per writer and origin: a transaction
 * whose vector holds nothing newer (the common case: the writer applied
 * nothing new in between) needs no trip to shared memory.
 */
typedef struct Recorded
{
	char		writer[NAMEDATALEN];
	char		origin[NAMEDATALEN];
	TimestampTz commit_ts;
} Recorded;

#define RECORDED_MAX 32
static Recorded RecordedCache[RECORDED_MAX];
static int	RecordedUsed = 0;

/* True if every entry of seen was recorded for writer already; notes them. */
static bool
already_recorded(const char *writer, List *seen)
{
	bool		all = true;
	ListCell   *lc;

	foreach(lc, seen)
	{
		ConcordSeenEntry *s = lfirst(lc);
		Recorded   *r = NULL;

		for (int i = 0; i < RecordedUsed && r == NULL; i++)
			if (strcmp(RecordedCache[i].writer, writer) == 0 &&
				strcmp(RecordedCache[i].origin, s->origin) == 0)
				r = &RecordedCache[i];
		if (r == NULL && RecordedUsed < RECORDED_MAX)
		{
			r = &RecordedCache[RecordedUsed++];
			strlcpy(r->writer, writer, NAMEDATALEN);
			strlcpy(r->origin, s->origin, NAMEDATALEN);
			r->commit_ts = 0;
		}
		if (r == NULL || s->commit_ts > r->commit_ts)
		{
			all = false;
			if (r)
				r->commit_ts = s->commit_ts;
		}
	}
	return all;
}

/* Records what writer had applied of each origin when it wrote (SEEN). */
void
concord_confirm_record(const char *writer, List *seen)
{
	int			n = ConcordShmem->max_entries * CONCORD_CONFIRM_PER_ENTRY;
	ListCell   *lc;

	if (seen == NIL || already_recorded(writer, seen))
		return;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	foreach(lc, seen)
	{
		ConcordSeenEntry *s = lfirst(lc);
		ConcordConfirmState *free_entry = NULL;
		bool		done = false;

		for (int i = 0; i < n && !done; i++)
		{
			ConcordConfirmState *e = &ConcordShmem->confirmed[i];

			if (e->dboid == MyDatabaseId && strcmp(e->writer, writer) == 0 &&
				strcmp(e->origin, s->origin) == 0)
			{
				e->commit_ts = Max(e->commit_ts, s->commit_ts);
				done = true;
			}
			else if (!OidIsValid(e->dboid) && free_entry == NULL)
				free_entry = e;
		}
		if (!done && free_entry)
		{
			free_entry->dboid = MyDatabaseId;
			strlcpy(free_entry->writer, writer, NAMEDATALEN);
			strlcpy(free_entry->origin, s->origin, NAMEDATALEN);
			free_entry->commit_ts = s->commit_ts;
		}
	}
	LWLockRelease(ConcordShmem->lock);
}

/* This database's confirmations as three arrays: writers, origins, times. */
static void
confirmed_arrays(Datum *writers, Datum *origins, Datum *times)
{
	int			n = ConcordShmem->max_entries * CONCORD_CONFIRM_PER_ENTRY;
	Datum	   *w = palloc(sizeof(Datum) * n);
	Datum	   *o = palloc(sizeof(Datum) * n);
	Datum	   *t = palloc(sizeof(Datum) * n);
	int			used = 0;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < n; i++)
	{
		ConcordConfirmState *e = &ConcordShmem->confirmed[i];

		if (e->dboid != MyDatabaseId)
			continue;
		w[used] = CStringGetTextDatum(e->writer);
		o[used] = CStringGetTextDatum(e->origin);
		t[used] = TimestampTzGetDatum(e->commit_ts);
		used++;
	}
	LWLockRelease(ConcordShmem->lock);
	*writers = PointerGetDatum(construct_array(w, used, TEXTOID, -1, false, TYPALIGN_INT));
	*origins = PointerGetDatum(construct_array(o, used, TEXTOID, -1, false, TYPALIGN_INT));
	*times = PointerGetDatum(construct_array(t, used, TIMESTAMPTZOID, 8,
											 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * The origins this database has applied transactions from: peers too, even
 * when concord.node does not list them (the far nodes of a ring).
 */
static Datum
seen_origins(void)
{
	List	   *vector = concord_seen_vector();
	Datum	   *o = palloc(sizeof(Datum) * Max(list_length(vector), 1));
	ListCell   *lc;

	foreach(lc, vector)
		o[foreach_current_index(lc)] =
			CStringGetTextDatum(((ConcordSeenEntry *) lfirst(lc))->origin);
	return PointerGetDatum(construct_array(o, list_length(vector), TEXTOID, -1,
										   false, TYPALIGN_INT));
}

/*
 * The tombstones that are frozen, as a tid[]: their raw xmin may name
 * another transaction by now (conflict.c, concord_xmin_version_xid), so
 * their version is unknown.  SQL shows only the raw xmin.
 */
static Datum
frozen_tombstones(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	List	   *tids = NIL;
	Datum	   *elems;
	ListCell   *lc;

	/* Before the first wraparound every version is known: no scan. */
	if (!concord_xids_wrapped())
		return PointerGetDatum(construct_empty_array(TIDOID));
	rel = table_open(concord_catalog_relid("tombstone", false), AccessShareLock);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (!TransactionIdIsValid(concord_xmin_version_xid(tuple->t_data)))
		{
			ItemPointer tid = palloc(sizeof(ItemPointerData));

			*tid = tuple->t_self;
			tids = lappend(tids, tid);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	elems = palloc(sizeof(Datum) * Max(list_length(tids), 1));
	foreach(lc, tids)
		elems[foreach_current_index(lc)] = PointerGetDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, list_length(tids), TIDOID,
										   sizeof(ItemPointerData), false, TYPALIGN_SHORT));
}

/*
 * The removal, in one statement.  $1-$3: the confirmations; $4: the GC
 * delay (ms); $5: the retention (ms, 0: none); $6: the origins applied
 * here; $7: the frozen tombstones, whose version is unknown; $8: the age
 * (in transactions) past which a tombstone goes before it can be frozen,
 * NULL before a wraparound.  The peers are the nodes concord.node lists
 * and those origins.
 * A tombstone's version is that of its xmin (VERSIONS_SQL): commit
 * timestamp and origin node.  Unknown versions (commit timestamps no
 * longer kept) are old enough to go.
 */
#define GC_SQL \
"WITH conf AS (" \
"    SELECT * FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), " \
"                             pg_catalog.unnest($3::timestamptz[])) AS c(writer, origin, ts)), " \
"peers AS (" \
"    SELECT node_name::text AS name FROM concord.node WHERE NOT is_local " \
"    UNION SELECT pg_catalog.unnest($6::text[]) " \
"    EXCEPT SELECT node_name::text FROM concord.node WHERE is_local%s), " \
"%s" \
"judged AS (" \
"    SELECT v.*, " \
"           v.ts IS NULL OR (v.origin IS NOT NULL AND v.ts < pg_catalog.now() - $4 * interval '1 ms' AND NOT EXISTS (" \
"               SELECT FROM peers p WHERE p.name IS DISTINCT FROM v.origin AND NOT EXISTS (" \
"                   SELECT FROM conf WHERE conf.writer = p.name AND conf.origin = v.origin " \
"                      AND conf.ts >= v.ts + interval '1 s'))) AS confirmed " \
"      FROM versions v), " \
"gone AS (" \
"    DELETE FROM concord.tombstone d USING judged j " \
"     WHERE d.ctid = j.tid " \
"       AND (j.confirmed OR ($5 > 0 AND j.ts < pg_catalog.now() - $5 * interval '1 ms') " \
"            OR (j.ts IS NOT NULL AND j.origin IS NOT NULL AND pg_catalog.age(d.xmin) > $8)) " \
"    RETURNING j.origin, j.ts, j.confirmed), " \
"gaps AS (" \
"    INSERT INTO concord.tombstone_gap AS g (peer, origin, removed_upto) " \
"    SELECT p.name, gone.origin, pg_catalog.max(gone.ts) FROM gone, peers p " \
"     WHERE NOT gone.confirmed AND gone.origin IS NOT NULL AND gone.ts IS NOT NULL " \
"       AND p.name IS DISTINCT FROM gone.origin AND NOT EXISTS (" \
"           SELECT FROM conf WHERE conf.writer = p.name AND conf.origin = gone.origin " \
"              AND conf.ts >= gone.ts + interval '1 s') " \
"     GROUP BY p.name, gone.origin " \
"    ON CONFLICT (peer, origin) DO UPDATE " \
"       SET removed_upto = GREATEST(g.removed_upto, excluded.removed_upto) " \
"    RETURNING 1), " \
"healed AS (" \
"    DELETE FROM concord.tombstone_gap g USING conf " \
"     WHERE conf.writer = g.peer AND conf.origin = g.origin AND conf.ts >= g.removed_upto " \
"    RETURNING 1) " \
"SELECT (SELECT pg_catalog.count(*) FROM gone), (SELECT pg_catalog.count(*) FROM gaps), " \
"       (SELECT pg_catalog.count(*) FROM healed), " \
"       (SELECT pg_catalog.count(*) FROM gone WHERE gone.ts IS NULL AND $8 IS NOT NULL)"

/*
 * The versions of the tombstones, for GC_SQL: through concord.row_version(),
 * which knows which node a replication origin id stood for when the
 * tombstone was written.  An origin that is not a node (one that is not
 * concord's, or one dropped before 0.3.0) is unknown: NULL.
 */
#define VERSIONS_SQL \
"versions AS (" \
"    SELECT t.ctid AS tid, v.commit_time AS ts, " \
"           CASE WHEN v.origin_node::text IN (SELECT name FROM peers " \
"                    UNION SELECT node_name::text FROM concord.node WHERE is_local) " \
"                THEN v.origin_node::text END AS origin " \
"      FROM concord.tombstone t " \
"      CROSS JOIN LATERAL concord.row_version(" \
"          CASE WHEN t.ctid = ANY ($7::pg_catalog.tid[]) THEN NULL ELSE t.xmin END) v), "

/*
 * The same before ALTER EXTENSION concord UPDATE to 0.3.0 (no
 * concord.row_version()): through the origin that holds the id now.
 */
#define VERSIONS_SQL_0_2 \
"versions AS (" \
"    SELECT t.ctid AS tid, c.timestamp AS ts, " \
"           CASE WHEN c.roident IS NULL OR c.roident = 0 " \
"                THEN (SELECT node_name::text FROM concord.node WHERE is_local) " \
"                ELSE pg_catalog.substring(o.roname, '^concord_[0-9]+_(.*)$') END AS origin " \
"      FROM concord.tombstone t " \
"      CROSS JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(" \
"          CASE WHEN t.ctid = ANY ($7::pg_catalog.tid[]) THEN NULL ELSE t.xmin END) c " \
"      LEFT JOIN pg_catalog.pg_replication_origin o ON o.roident = c.roident), "

/*
 * concord.tombstone_gap changes in the current transaction: apply workers
 * reload it when the generation moves, now and again once the change is
 * committed (a worker that reloaded in between saw the old rows).
 */
static bool GapsCallbackRegistered = false;
static bool GapsChangedInXact = false;

static void
gaps_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_COMMIT && GapsChangedInXact)
		pg_atomic_fetch_add_u64(&ConcordShmem->gap_generation, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		GapsChangedInXact = false;
}

static void
gaps_changed(void)
{
	if (!GapsCallbackRegistered)
	{
		RegisterXactCallback(gaps_xact_callback, NULL);
		GapsCallbackRegistered = true;
	}
	GapsChangedInXact = true;
	pg_atomic_fetch_add_u64(&ConcordShmem->gap_generation, 1);
}

/*
 * After a wraparound, the age in transactions past which a tombstone is
 * removed (with its gap rows) before vacuum may freeze it: half of the
 * smallest freeze_min_age that applies to concord.tombstone, which vacuum
 * also caps at half of autovacuum_freeze_max_age.
 */
static Datum
freeze_horizon(bool *isnull)
{
	Relation	rel;
	int			min_age = vacuum_freeze_min_age;

	*isnull = !concord_xids_wrapped();
	if (*isnull)
		return (Datum) 0;
	/* vacuum freezes past Min(freeze_min_age, autovacuum_freeze_max_age / 2) */
	min_age = Min(min_age, autovacuum_freeze_max_age / 2);
	rel = table_open(concord_catalog_relid("tombstone", false), AccessShareLock);
	if (rel->rd_options &&
		((StdRdOptions *) rel->rd_options)->autovacuum.freeze_min_age >= 0)
		min_age = Min(min_age,
					  ((StdRdOptions *) rel->rd_options)->autovacuum.freeze_min_age);
	table_close(rel, AccessShareLock);
	return Int64GetDatum((int64) min_age / 2);
}

/*
 * Removes the tombstones every peer confirmed (and those past the
 * retention, or, after a wraparound, about to be frozen); returns how
 * many.  Runs in the caller's transaction, with a snapshot.
 */
int64
concord_tombstone_gc(void)
{
	Oid			types[8] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, INT8OID, INT8OID,
	TEXTARRAYOID, TIDARRAYOID, INT8OID};
	Datum		values[8];
	char		nulls[8] = "       ";
	bool		isnull;
	int64		removed;
	int64		gaps;
	int64		healed;
	int64		unknown;

	confirmed_arrays(&values[0], &values[1], &values[2]);
	values[3] = Int64GetDatum((int64) concord_tombstone_gc_delay * 1000);
	values[4] = Int64GetDatum((int64) concord_tombstone_retention * 1000);
	values[5] = seen_origins();
	values[6] = frozen_tombstones();
	values[7] = freeze_horizon(&isnull);
	if (isnull)
		nulls[7] = 'n';
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(psprintf(GC_SQL,
									   /* nobody waits for a node that left */
									   OidIsValid(concord_catalog_relid("departed_node", true)) ?
									   " EXCEPT SELECT node_name::text FROM concord.departed_node" : "",
									   OidIsValid(concord_catalog_relid(CATALOG_ORIGIN_HISTORY, true)) ?
									   VERSIONS_SQL : VERSIONS_SQL_0_2),
							  8, types, values, nulls, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not remove tombstones");
	removed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	gaps = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	healed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	unknown = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	SPI_finish();
	if (unknown > 0)
		ereport(WARNING,
				(errmsg("concord removed %lld tombstones whose version freezing had made unknown",
						(long long) unknown),
				 errdetail("After the transaction counter wrapped around, they were frozen before concord could remove them with a record of what a peer had not confirmed: a peer's late change of those keys is applied as if it followed the deletions."),
				 errhint("Do not VACUUM FREEZE concord.tombstone; compare the tables of those peers.")));
	if (gaps > 0 || healed > 0)
		gaps_changed();
	if (gaps > 0)
		ereport(LOG,
				(errmsg("concord removed tombstones that not every peer had confirmed (concord.tombstone_retention, or about to be frozen after a wraparound)"),
				 errdetail("Changes those peers wrote before applying the deletions will be refused until their tables are resynchronized.")));
	return removed;
}

/* The gaps, as apply caches them. */
typedef struct Gap
{
	char		peer[NAMEDATALEN];
	char		origin[NAMEDATALEN];
	TimestampTz removed_upto;
} Gap;

static List *Gaps = NIL;
static uint64 GapsGeneration = PG_UINT64_MAX;

static void
load_gaps(void)
{
	MemoryContext oldcxt;

	list_free_deep(Gaps);
	Gaps = NIL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* Not read-only: a fresh snapshot sees the latest removal. */
	if (SPI_execute("SELECT peer, origin, removed_upto FROM concord.tombstone_gap",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read concord.tombstone_gap");
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Gap		   *g = palloc0(sizeof(Gap));
		bool		isnull;

		strlcpy(g->peer, SPI_getvalue(tup, desc, 1), NAMEDATALEN);
		strlcpy(g->origin, SPI_getvalue(tup, desc, 2), NAMEDATALEN);
		g->removed_upto = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
		Gaps = lappend(Gaps, g);
	}
	MemoryContextSwitchTo(oldcxt);
	SPI_finish();
}

/*
 * Refuses a transaction of writer whose SEEN vector is behind a gap: the
 * tombstones it would need are gone.  Runs in the apply transaction.
 */
void
concord_gap_check(const char *sub_name, const char *writer, List *seen)
{
	uint64		generation = pg_atomic_read_u64(&ConcordShmem->gap_generation);
	ListCell   *lc;

	if (generation != GapsGeneration)
	{
		load_gaps();
		GapsGeneration = generation;
	}
	foreach(lc, Gaps)
	{
		Gap		   *g = lfirst(lc);
		TimestampTz seen_upto;

		if (strcmp(g->peer, writer) != 0)
			continue;
		seen_upto = concord_seen_lookup(seen, g->origin);

		/*
		 * A writer that never applied anything of the origin (a write-only
		 * peer) is not behind its deletions, it never follows them: nothing
		 * it could do would heal the gap, and refusing it stopped its
		 * subscription for good (review #21).  Its changes of rows the
		 * origin deleted meet no tombstone, as before tombstones existed.
		 */
		if (seen_upto == 0 || seen_upto >= g->removed_upto)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("subscription \"%s\": node \"%s\" wrote this transaction before applying deletions of node \"%s\" whose tombstones were removed here",
						sub_name, writer, g->origin),
				 errdetail("The tombstones up to %s were removed after concord.tombstone_retention; applying the transaction could bring back deleted rows or lose deletions.",
						   timestamptz_to_str(g->removed_upto)),
				 errhint("Resynchronize the subscription's tables with concord.alter_subscription_resynchronize_table(), or drop and re-create the subscription.")));
	}
}
