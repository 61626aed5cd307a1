/*-------------------------------------------------------------------------
 *
 * apply_deps.c
 *		Which earlier unit a remote transaction must wait for, when several
 *		workers apply a subscription (parallel.h).
 *
 * Two remote transactions that touch a common key, of any unique index of
 * the local table, never run at the same time: the later waits until the
 * earlier is done.  The leader hashes, for each change, the values of
 * each unique index's columns as received (the new row's and the old
 * row's), and keeps for each hash bucket the latest unit that touched a
 * key falling there.  A bucket shared by two keys only makes a unit wait
 * when it need not; it never lets one run when it must not.
 *
 * The text a column arrives in is its value's only spelling for the types
 * listed in hashable_type(), when the provider's column has the same type
 * and the index compares it bytewise (a deterministic collation).  A
 * change whose keys cannot be told that way waits for every earlier unit,
 * and every later unit waits for it (serial):
 *	- a table without a unique index, or with an index on an expression,
 *	  with a predicate, NULLS NOT DISTINCT or an exclusion constraint, or
 *	  on a column of another type or not sent by the provider;
 *	- a table whose writes may run a user's code (a trigger enabled ALWAYS
 *	  or REPLICA, a rule): that code may touch any row;
 *	- an UPDATE or DELETE without the whole old row (REPLICA IDENTITY
 *	  FULL) on a table with a unique index on columns outside the
 *	  provider's key: the old values of those columns are not sent;
 *	- a column not sent because it is unchanged and stored out of line;
 *	- while the database has another subscription (the workers lock their
 *	  keys against its workers: key_lock.c), a table the provider sends
 *	  with REPLICA IDENTITY FULL, and a unit of more changes than
 *	  max_locks_per_transaction: apply may lock such a table whole, which
 *	  must never keep an earlier unit waiting for a later one;
 *	- a TRUNCATE (the leader calls concord_deps_serial()).
 *
 * Foreign keys need no key: apply runs with session_replication_role
 * replica (no referential check fires), and units commit in order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "storage/lock.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

#include "apply/apply.h"
#include "apply/parallel.h"
#include "apply/worker.h"
#include "miscadmin.h"
#include "shmem/shmem.h"

#define DEP_BUCKETS		(1 << 16)
#define INVAL_POLL_MS	10

typedef struct DepIndex
{
	uint64		seed;			/* of the table and the key's columns */
	int			ncols;
	int		   *cols;			/* remote column numbers */
	bool		key_only;		/* every column is in the provider's key */
} DepIndex;

typedef struct DepRel
{
	Oid			remoteid;		/* hash key */
	bool		valid;
	bool		serial;			/* every change of it is serial */
	bool		full_identity;	/* the provider sends it with REPLICA
								 * IDENTITY FULL */
	bool		old_unknown;	/* an UPDATE or DELETE without the whole
								 * old row is serial */
	Oid			localid;
	int			nindexes;
	DepIndex   *indexes;		/* in cxt */
	MemoryContext cxt;			/* made again at each describe() */
} DepRel;

static HTAB *DepRels = NULL;
static MemoryContext DepCxt = NULL;
static uint64 *Buckets = NULL;	/* latest unit of a key hashed there */
static uint64 Barrier = 0;		/* latest serial unit */
static uint64 UnitSeq = 0;
static uint64 UnitDep = 0;
static bool UnitSerial = false;
static int	UnitChanges = 0;
static bool UnitKeyLocks = false;	/* its workers may lock their keys */
static uint64 SubsGeneration = PG_UINT64_MAX;
static bool OtherSubs = false;
static TimestampTz LastPoll = 0;

static void
deps_invalidate(Datum arg pg_attribute_unused(), Oid relid)
{
	HASH_SEQ_STATUS status;
	DepRel	   *drel;

	if (DepRels == NULL)
		return;
	hash_seq_init(&status, DepRels);
	while ((drel = hash_seq_search(&status)) != NULL)
		if (!OidIsValid(relid) || drel->localid == relid)
			drel->valid = false;
}

void
concord_deps_init(void)
{
	HASHCTL		ctl;

	DepCxt = AllocSetContextCreate(TopMemoryContext, "concord apply dependencies",
								   ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DepRel);
	ctl.hcxt = DepCxt;
	DepRels = hash_create("concord apply dependencies", 64, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	Buckets = MemoryContextAllocZero(DepCxt, sizeof(uint64) * DEP_BUCKETS);
	CacheRegisterRelcacheCallback(deps_invalidate, (Datum) 0);
}

/* The provider sent the relation again: its columns may have changed. */
void
concord_deps_forget(Oid remoteid)
{
	DepRel	   *drel = hash_search(DepRels, &remoteid, HASH_FIND, NULL);

	if (drel)
		drel->valid = false;
}

/*
 * The leader runs no transaction of its own between units, so it reads
 * the invalidations of DDL committed here (a new unique index) every
 * INVAL_POLL_MS.  A unit dispatched before that lacks the new index's
 * keys: two of them may then wait for each other through that index,
 * which the deadlock detector resolves by restarting the subscription.
 */
void
concord_deps_poll_invalidations(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(LastPoll, now, INVAL_POLL_MS))
		return;
	LastPoll = now;
	AcceptInvalidationMessages();
}

/*
 * Types whose text form, as the provider writes it, is the only one of
 * each value, so that equal values hash alike.
 */
static bool
hashable_type(Oid typid)
{
	switch (typid)
	{
		case BOOLOID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case TEXTOID:
		case VARCHAROID:
		case NAMEOID:
		case UUIDOID:
		case DATEOID:
		case BYTEAOID:
		case CHAROID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return true;
		default:
			return false;
	}
}

/* The remote column that maps onto local attnum, or -1. */
static int
remote_column(ApplyRel *arel, AttrNumber attnum)
{
	for (int i = 0; i < arel->remote->natts; i++)
		if (arel->attmap[i] == attnum)
			return i;
	return -1;
}

/* Reads one unique index into idx; false if its keys cannot be told. */
static bool
describe_index(ApplyRel *arel, Relation rel, Relation idxrel, DepIndex *idx,
			   MemoryContext cxt)
{
	Form_pg_index ind = idxrel->rd_index;

	if (RelationGetIndexExpressions(idxrel) != NIL ||
		RelationGetIndexPredicate(idxrel) != NIL ||
		ind->indnullsnotdistinct)
		return false;
	idx->ncols = ind->indnkeyatts;
	idx->cols = MemoryContextAlloc(cxt, sizeof(int) * Max(idx->ncols, 1));
	idx->seed = hash_bytes_uint32_extended(RelationGetRelid(rel), 0);
	idx->key_only = true;
	for (int i = 0; i < idx->ncols; i++)
	{
		AttrNumber	attnum = ind->indkey.values[i];
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
		Oid			coll = idxrel->rd_indcollation[i];
		int			r = remote_column(arel, attnum);

		if (r < 0 || !hashable_type(att->atttypid) ||
			arel->remote->atts[r].typid != att->atttypid ||
			(OidIsValid(coll) && !get_collation_isdeterministic(coll)))
			return false;
		if (arel->remote->atts[r].typmod != att->atttypmod)
			return false;
		idx->cols[i] = r;
		/* by its columns, not its place: the same key hashes alike */
		idx->seed = hash_bytes_uint32_extended((uint32) attnum, idx->seed);
		if (!arel->remote->atts[r].is_key)
			idx->key_only = false;
	}
	return true;
}

/* Fills drel from the local table, in a transaction of the leader's. */
static void
describe(DepRel *drel)
{
	ApplyRel   *arel;
	Relation	rel;
	List	   *indexes;
	ListCell   *lc;
	int			n = 0;
	MemoryContext oldcxt = CurrentMemoryContext;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	arel = concord_apply_rel_get(drel->remoteid, AccessShareLock);
	rel = table_open(arel->localid, NoLock);
	indexes = RelationGetIndexList(rel);
	drel->localid = arel->localid;
	if (drel->cxt == NULL)
		drel->cxt = AllocSetContextCreate(DepCxt, "concord apply dependency",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(drel->cxt);
	drel->serial = arel->user_code;
	drel->full_identity = arel->remote->replident == REPLICA_IDENTITY_FULL;
	drel->old_unknown = false;
	drel->indexes = MemoryContextAllocZero(drel->cxt,
										   sizeof(DepIndex) * Max(list_length(indexes), 1));
	foreach(lc, indexes)
	{
		Relation	idxrel = index_open(lfirst_oid(lc), AccessShareLock);

		if (idxrel->rd_index->indisexclusion)
			drel->serial = true;
		else if (idxrel->rd_index->indisunique)
		{
			if (!describe_index(arel, rel, idxrel, &drel->indexes[n], drel->cxt))
				drel->serial = true;
			else if (!drel->indexes[n++].key_only)
				drel->old_unknown = true;
		}
		index_close(idxrel, AccessShareLock);
	}
	drel->nindexes = n;
	if (n == 0)
		drel->serial = true;
	table_close(rel, NoLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* The commit leaves TopMemoryContext current. */
	MemoryContextSwitchTo(oldcxt);
	drel->valid = true;
}

static DepRel *
get_deprel(Oid remoteid)
{
	bool		found;
	DepRel	   *drel = hash_search(DepRels, &remoteid, HASH_ENTER, &found);

	if (!found)
	{
		drel->valid = false;
		drel->localid = InvalidOid;
		drel->cxt = NULL;
	}
	if (!drel->valid)
		describe(drel);
	return drel;
}

/*
 * Whether the database has another subscription, whose workers this one's
 * lock their keys against (apply_xact.c, key_locks_needed()).  Looked at
 * again only when a subscription entry was taken or freed.  One created
 * after this unit was read may have its workers lock keys all the same:
 * a table locked whole then at worst makes two workers deadlock, which
 * the detector resolves by restarting the subscription.
 */
static bool
other_subscriptions(void)
{
	uint64		generation = pg_atomic_read_u64(&ConcordShmem->subs_generation);

	if (generation == SubsGeneration)
		return OtherSubs;
	OtherSubs = false;
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordSubState *st = &ConcordShmem->subs[i];

		if (st->dboid == MyDatabaseId && st->subid != W.sub->id)
			OtherSubs = true;
	}
	LWLockRelease(ConcordShmem->lock);
	SubsGeneration = generation;
	return OtherSubs;
}

void
concord_deps_begin(uint64 seq)
{
	UnitSeq = seq;
	UnitDep = Barrier;
	UnitSerial = false;
	UnitChanges = 0;
	UnitKeyLocks = other_subscriptions();
}

void
concord_deps_serial(void)
{
	UnitSerial = true;
}

/* Notes one key of the unit: it waits for the last unit that touched it. */
static void
note_key(uint64 hash)
{
	uint64	   *bucket = &Buckets[hash & (DEP_BUCKETS - 1)];

	if (*bucket != UnitSeq)
		UnitDep = Max(UnitDep, *bucket);
	*bucket = UnitSeq;
}

/*
 * Hashes the values of idx's columns in tup; false if one is not sent.
 * A NULL in a column: no key (NULLs are distinct), *skip is set.
 */
static bool
hash_index(DepIndex *idx, ConcordTuple *tup, uint64 *hash, bool *skip)
{
	uint64		h = idx->seed;

	*skip = false;
	for (int i = 0; i < idx->ncols; i++)
	{
		int			c = idx->cols[i];

		if (tup == NULL || c >= tup->ncols)
			return false;
		if (tup->kinds[c] == CONCORD_COL_NULL)
		{
			*skip = true;
			return true;
		}
		if (tup->kinds[c] != CONCORD_COL_TEXT)
			return false;
		h = hash_bytes_extended((const unsigned char *) tup->values[c].data,
								tup->values[c].len, h) ^ (uint64) i;
	}
	*hash = h;
	return true;
}

/*
 * The keys of tup, a row the change writes or had: of every index, or
 * only of those made of the provider's key columns (an old row of kind
 * CONCORD_OLD_KEY).  False if one is not known.
 */
static bool
note_row(DepRel *drel, ConcordTuple *tup, bool key_only)
{
	for (int i = 0; i < drel->nindexes; i++)
	{
		DepIndex   *idx = &drel->indexes[i];
		uint64		hash;
		bool		skip;

		if (key_only && !idx->key_only)
			continue;
		if (!hash_index(idx, tup, &hash, &skip))
			return false;
		if (!skip)
			note_key(hash);
	}
	return true;
}

void
concord_deps_change(Oid remoteid, char type, char oldkind,
					ConcordTuple *oldtup, ConcordTuple *newtup)
{
	DepRel	   *drel;
	bool		known = true;

	if (UnitSerial)
		return;
	if (++UnitChanges > max_locks_per_xact && UnitKeyLocks)
	{
		UnitSerial = true;
		return;
	}
	drel = get_deprel(remoteid);
	if (drel->serial || (drel->full_identity && UnitKeyLocks))
	{
		UnitSerial = true;
		return;
	}
	if (type != CONCORD_MSG_INSERT && oldkind != CONCORD_OLD_FULL &&
		drel->old_unknown)
	{
		UnitSerial = true;
		return;
	}
	if (type != CONCORD_MSG_DELETE)
		known = note_row(drel, newtup, false);
	if (known && oldkind == CONCORD_OLD_FULL)
		known = note_row(drel, oldtup, false);
	else if (known && oldkind == CONCORD_OLD_KEY)
		known = note_row(drel, oldtup, true);
	else if (known && type == CONCORD_MSG_DELETE)
		known = false;			/* a DELETE without its key */
	if (!known)
		UnitSerial = true;
}

/*
 * The unit is read: the latest earlier unit it waits for.  A serial unit
 * waits for every earlier one, and every later one waits for it.
 */
uint64
concord_deps_end(bool *serial)
{
	*serial = UnitSerial;
	if (UnitSerial)
	{
		Barrier = UnitSeq;
		return UnitSeq - 1;
	}
	return UnitDep;
}
