/*-------------------------------------------------------------------------
 *
 * origin.c
 *		concord's replication origins: one per (subscription, origin node).
 *
 * An applied transaction commits under the replication origin named
 * "concord_<subscription id>_<origin node name>", with the provider's end
 * LSN of its commit as progress.  The name carries the node where the
 * transaction was first written, so a provider that forwards it (rings,
 * stars) can still tell its subscribers where it came from, and nobody
 * ever sends a change back to its origin.  The subscription's position in
 * its provider's WAL is the highest progress among its origins: the
 * provider streams in commit order, so that is the end of the last
 * transaction applied.  Progress is flushed with the local commit, so it
 * survives a crash exactly when the applied transaction does.
 *
 * A row's commit timestamp record keeps only the 16-bit id of the origin
 * its transaction committed under, and PostgreSQL gives the id of a
 * dropped origin (drop_subscription drops them) to the next one created.
 * concord.origin_history says which node each id stood for from which
 * transaction on, so a version keeps its node after its origin is gone
 * (review #8).  Decoding needs none of it: the walsender reads
 * pg_replication_origin as it was when the transaction committed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/commit_ts.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/transam.h"
#include "access/table.h"
#include "catalog/pg_replication_origin.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/rel.h"

#include "catalog/origin.h"
#include "catalog/tables.h"

#define ORIGIN_PREFIX	"concord_"

char *
concord_origin_prefix(Oid subid)
{
	return psprintf(ORIGIN_PREFIX "%u_", subid);
}

char *
concord_origin_name(Oid subid, const char *node_name)
{
	return psprintf(ORIGIN_PREFIX "%u_%s", subid, node_name);
}

/*
 * The origin node's name inside one of our origin names, or NULL when the
 * origin is not concord's.
 */
const char *
concord_origin_node_name(const char *origin_name)
{
	const char *p;

	if (strncmp(origin_name, ORIGIN_PREFIX, strlen(ORIGIN_PREFIX)) != 0)
		return NULL;
	p = origin_name + strlen(ORIGIN_PREFIX);
	if (!isdigit((unsigned char) *p))
		return NULL;
	while (isdigit((unsigned char) *p))
		p++;
	if (*p != '_' || p[1] == '\0')
		return NULL;
	return p + 1;
}

/*
 * The node name a local origin stands for; for an origin that is not
 * concord's, its own name.  Needs a transaction (reads the origin catalog).
 */
char *
concord_origin_node_by_id(RepOriginId origin)
{
	char	   *origin_name;
	const char *node;

	if (!replorigin_by_oid(origin, true, &origin_name))
		return NULL;
	node = concord_origin_node_name(origin_name);
	return pstrdup(node ? node : origin_name);
}

/* Returns the origin for (subscription, node), creating it if needed. */
RepOriginId
concord_origin_ensure(Oid subid, const char *node_name)
{
	char	   *name = concord_origin_name(subid, node_name);
	RepOriginId origin = replorigin_by_name(name, true);

	if (origin == InvalidRepOriginId)
	{
		origin = replorigin_create(name);

		/*
		 * Every transaction that committed under the id's previous holder
		 * had its xid before the holder was dropped, so before now; every
		 * one that commits under the new origin gets its xid later.
		 */
		concord_origin_history_insert(origin,
									  U64FromFullTransactionId(ReadNextFullTransactionId()),
									  node_name);
	}
	pfree(name);
	return origin;
}

/*
 * concord.origin_history, cached per backend; an origin created or dropped
 * anywhere drops the cache (its history row commits with the creation).
 */
static ConcordOriginHolder *Holders = NULL;
static int	NHolders = 0;
static bool HoldersValid = false;
static uint64 HoldersInvalidations = 0;

/* Node names of origins without history (not concord's), cached. */
#define ORIGIN_CACHE_SIZE 16
static ConcordOriginHolder OriginCache[ORIGIN_CACHE_SIZE];
static int	OriginCacheUsed = 0;

static void
origin_caches_reset(Datum arg pg_attribute_unused(), int cacheid pg_attribute_unused(),
					uint32 hashvalue pg_attribute_unused())
{
	HoldersValid = false;
	HoldersInvalidations++;
	OriginCacheUsed = 0;
}

static void
load_holders(void)
{
	static bool callback_registered = false;
	uint64		invalidations = HoldersInvalidations;
	List	   *rows;
	ListCell   *lc;

	if (!callback_registered)
	{
		CacheRegisterSyscacheCallback(REPLORIGIDENT, origin_caches_reset, (Datum) 0);
		callback_registered = true;
	}
	rows = concord_origin_history_all();
	if (Holders)
		pfree(Holders);
	Holders = MemoryContextAlloc(TopMemoryContext,
								 sizeof(ConcordOriginHolder) * Max(list_length(rows), 1));
	NHolders = 0;
	foreach(lc, rows)
		Holders[NHolders++] = *(ConcordOriginHolder *) lfirst(lc);
	list_free_deep(rows);

	/*
	 * Valid once read whole with no invalidation meanwhile, and not while
	 * the catalog is missing (before ALTER EXTENSION concord UPDATE).
	 */
	HoldersValid = invalidations == HoldersInvalidations &&
		OidIsValid(concord_catalog_relid(CATALOG_ORIGIN_HISTORY, true));
}

/*
 * The full xid of a recent xid (a row version's xmin), or of one frozen
 * before any wraparound.
 */
FullTransactionId
concord_recent_full_xid(TransactionId xid)
{
	FullTransactionId next = ReadNextFullTransactionId();
	uint32		epoch = EpochFromFullTransactionId(next);

	if (xid > XidFromFullTransactionId(next) && epoch > 0)
		epoch--;
	return FullTransactionIdFromEpochAndXid(epoch, xid);
}

/* The current name of an origin without history, or NULL. */
static const char *
origin_node_now(RepOriginId origin)
{
	char	   *node;

	for (int i = 0; i < OriginCacheUsed; i++)
		if (OriginCache[i].roident == origin)
			return NameStr(OriginCache[i].node);
	node = concord_origin_node_by_id(origin);
	if (node == NULL)
		return NULL;
	if (OriginCacheUsed < ORIGIN_CACHE_SIZE)
	{
		OriginCache[OriginCacheUsed].roident = origin;
		namestrcpy(&OriginCache[OriginCacheUsed].node, node);
		OriginCacheUsed++;
	}
	return node;
}

/*
 * The node a transaction that committed under origin wrote for: the
 * origin's holder at the time (concord.origin_history), else, for an
 * origin concord never created, its current name.  NULL when unknown: the
 * id was not concord's when xid committed (a write of this database by
 * other means), or the origin is gone.  Needs a transaction.
 */
const char *
concord_origin_node_of_xact(RepOriginId origin, TransactionId xid)
{
	uint64		fxid = U64FromFullTransactionId(concord_recent_full_xid(xid));
	const ConcordOriginHolder *best = NULL;
	bool		known = false;
	bool		later = false;

	if (!HoldersValid)
		load_holders();
	for (int i = 0; i < NHolders; i++)
	{
		if (Holders[i].roident != origin)
			continue;
		known = true;
		if (Holders[i].since > fxid)
			later = true;
		else if (best == NULL || Holders[i].since > best->since)
			best = &Holders[i];
	}
	if (best && NameStr(best->node)[0] != '\0')
		return NameStr(best->node);
	/*
	 * An empty name: concord dropped the origin, and an origin of another
	 * tool may have held the id since: the current holder's name, unless a
	 * concord origin took the id later (who held it between is not known).
	 */
	if (best)
		return later ? NULL : origin_node_now(origin);
	return known ? NULL : origin_node_now(origin);
}

/*
 * The version of a transaction as conflict detection and anti-entropy
 * read it: its commit timestamp, and the node it was first written on
 * (local_node for one under no replication origin; for one under an
 * origin, concord_origin_node_of_xact()).  False when the commit timestamp
 * is not known (track_commit_timestamp off, a frozen or too old xid).
 * Needs a transaction.
 */
bool
concord_xact_version(TransactionId xid, const char *local_node,
					 TimestampTz *commit_time, const char **node)
{
	RepOriginId origin = InvalidRepOriginId;

	*node = NULL;
	if (!track_commit_timestamp || !TransactionIdIsNormal(xid) ||
		!TransactionIdGetCommitTsData(xid, commit_time, &origin))
		return false;
	*node = origin != InvalidRepOriginId ?
		concord_origin_node_of_xact(origin, xid) : local_node;
	return true;
}

typedef struct SubOrigin
{
	RepOriginId id;
	char	   *name;
} SubOrigin;

/* The origins of one subscription, read from pg_replication_origin. */
static List *
sub_origins(Oid subid)
{
	char	   *prefix = concord_origin_prefix(subid);
	Relation	rel = table_open(ReplicationOriginRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tup;
	List	   *found = NIL;

	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_replication_origin form = (Form_pg_replication_origin) GETSTRUCT(tup);
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_replication_origin_roname,
									 RelationGetDescr(rel), &isnull);
		char	   *name = TextDatumGetCString(d);

		if (strncmp(name, prefix, strlen(prefix)) == 0)
		{
			SubOrigin  *o = palloc(sizeof(SubOrigin));

			o->id = form->roident;
			o->name = name;
			found = lappend(found, o);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The origins of one subscription, as ConcordSubOrigin: the node each
 * stands for and its id.
 */
List *
concord_origin_sub_list(Oid subid)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, sub_origins(subid))
	{
		SubOrigin  *o = lfirst(lc);
		ConcordSubOrigin *out = palloc(sizeof(ConcordSubOrigin));

		out->id = o->id;
		out->node = pstrdup(concord_origin_node_name(o->name));
		result = lappend(result, out);
	}
	return result;
}

/* How many origins the subscription has (one per node it received from). */
int
concord_origin_count(Oid subid)
{
	return list_length(sub_origins(subid));
}

/* Whether the subscription has the origin of node_name. */
bool
concord_origin_exists(Oid subid, const char *node_name)
{
	return replorigin_by_name(concord_origin_name(subid, node_name), true) !=
		InvalidRepOriginId;
}

/*
 * Whether any replication origin of the server, in any database, belongs to
 * subscription id subid: origins are shared by every database, so a
 * subscription id must be unique server-wide.
 */
bool
concord_origin_sub_id_in_use(Oid subid)
{
	return sub_origins(subid) != NIL;
}

/*
 * How many of the server's replication origin states are taken: one per
 * origin that ever applied or tracked progress, in every database, out of
 * max_replication_slots.  Reads pg_replication_origin_status.
 */
int
concord_origin_states_used(void)
{
	int			used = 0;
	bool		isnull;

	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_origin_status",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		used = (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PopActiveSnapshot();
	return used;
}

/*
 * The end of the last provider transaction applied by the subscription,
 * with the local WAL flushed up to its commit: apply reports it to the
 * provider as flushed at once (apply commits asynchronously).
 */
XLogRecPtr
concord_origin_sub_progress(Oid subid)
{
	XLogRecPtr	max = InvalidXLogRecPtr;
	ListCell   *lc;

	foreach(lc, sub_origins(subid))
	{
		XLogRecPtr	lsn = replorigin_get_progress(((SubOrigin *) lfirst(lc))->id,
												  true);

		if (lsn > max)
			max = lsn;
	}
	return max;
}

void
concord_origin_drop_all(Oid subid)
{
	ListCell   *lc;

	foreach(lc, sub_origins(subid))
	{
		SubOrigin  *o = lfirst(lc);

		replorigin_drop_by_name(o->name, true, false);

		/*
		 * From now on the id is no node's: an origin that is not concord's
		 * (another replication's) may get it next, and its transactions
		 * must not pass for the dropped origin's node.
		 */
		concord_origin_history_mark_dropped(o->id,
											U64FromFullTransactionId(ReadNextFullTransactionId()));
	}
}

/*
 * Repair origins: a repair (antientropy/repair_row.c) writes a row with the
 * version of the node it came from, under an origin named
 * "concord_0<database OID>_<node>" (no subscription id starts with 0, and
 * the name carries the node as apply's origins do), one per database and
 * node.  A repair takes the origin's lock before it looks it up or makes
 * it, and keeps it to the end of its transaction; the manager drops the
 * origins no repair holds (concord_origin_drop_idle_repairs), so that they
 * do not keep a replication origin state each.
 */
#define CONCORD_REPAIR_ORIGIN_LOCK_FIELD4 0xC2

char *
concord_repair_origin_name(const char *node_name)
{
	return psprintf(ORIGIN_PREFIX "0%u_%s", MyDatabaseId, node_name);
}

static void
repair_origin_locktag(LOCKTAG *tag, const char *origin_name)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId,
						 hash_bytes((const unsigned char *) origin_name, strlen(origin_name)),
						 0, CONCORD_REPAIR_ORIGIN_LOCK_FIELD4);
}

/* Waits for the repair origin's lock, held to the transaction's end. */
void
concord_repair_origin_lock(const char *origin_name)
{
	LOCKTAG		tag;

	repair_origin_locktag(&tag, origin_name);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	/* an origin dropped while this waited is gone from the caches too */
	AcceptInvalidationMessages();
}

/* Drops this database's repair origins that no repair holds. */
void
concord_origin_drop_idle_repairs(void)
{
	char	   *prefix = psprintf(ORIGIN_PREFIX "0%u_", MyDatabaseId);
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(prefix)};
	List	   *names = NIL;
	List	   *ids = NIL;
	ListCell   *lc1,
			   *lc2;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT roname, roident FROM pg_catalog.pg_replication_origin"
							  " WHERE pg_catalog.starts_with(roname, $1)",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the replication origins");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		MemoryContext oldcxt = MemoryContextSwitchTo(CurTransactionContext);

		names = lappend(names, pstrdup(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
		ids = lappend_oid(ids, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 2, &isnull)));
		MemoryContextSwitchTo(oldcxt);
	}
	SPI_finish();
	forboth(lc1, names, lc2, ids)
	{
		LOCKTAG		tag;

		repair_origin_locktag(&tag, lfirst(lc1));
		if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
			continue;
		replorigin_drop_by_name(lfirst(lc1), true, true);
		concord_origin_history_mark_dropped(lfirst_oid(lc2),
											U64FromFullTransactionId(ReadNextFullTransactionId()));
	}
}
