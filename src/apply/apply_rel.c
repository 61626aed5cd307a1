/*-------------------------------------------------------------------------
 *
 * apply_rel.c
 *		Maps the provider's relations onto local tables, by name.
 *
 * RELATION messages are stored as they arrive (keyed by the provider's
 * OID); the local table and the column map are looked up at the first
 * change that needs them, inside the apply transaction, and again after
 * the local table changed (relcache invalidation) or the provider sent
 * new metadata.  A missing table or column is an error that names the
 * subscription, the relation and the column: apply stops, the
 * subscription is down and retries until the table is fixed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "libpq/pqformat.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "apply/apply.h"
#include "catalog/relcheck.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/tombstone.h"

static HTAB *ApplyRels = NULL;
static MemoryContext ApplyRelContext = NULL;
static List *SyncedTables = NIL;
static char *SubName = NULL;

static void
apply_rel_invalidate(Datum arg pg_attribute_unused(), Oid relid)
{
	HASH_SEQ_STATUS status;
	ApplyRel   *arel;

	if (ApplyRels == NULL)
		return;
	hash_seq_init(&status, ApplyRels);
	while ((arel = hash_seq_search(&status)) != NULL)
		if (!OidIsValid(relid) || arel->localid == relid)
			arel->resolved = false;
}

void
concord_apply_rel_init(const char *sub_name, List *synced)
{
	HASHCTL		ctl;
	MemoryContext oldcxt;
	ListCell   *lc;

	ApplyRelContext = AllocSetContextCreate(TopMemoryContext,
											"concord apply relations",
											ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(ApplyRel);
	ctl.hcxt = ApplyRelContext;
	ApplyRels = hash_create("concord apply relations", 64, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	oldcxt = MemoryContextSwitchTo(ApplyRelContext);
	SubName = pstrdup(sub_name);
	SyncedTables = NIL;
	foreach(lc, synced)
	{
		ConcordSubTable *st = palloc(sizeof(ConcordSubTable));

		*st = *(ConcordSubTable *) lfirst(lc);
		st->nspname = pstrdup(st->nspname);
		st->relname = pstrdup(st->relname);
		SyncedTables = lappend(SyncedTables, st);
	}
	MemoryContextSwitchTo(oldcxt);
	CacheRegisterRelcacheCallback(apply_rel_invalidate, (Datum) 0);
}

/*
 * Reads a RELATION message and keeps it for the stream's lifetime.  A
 * re-send (the provider sends one again whenever its cache of the table
 * was invalidated, which ANALYZE alone does) replaces the entry whole: its
 * memory, map and input functions' caches included.
 */
void
concord_apply_rel_store(StringInfo msg)
{
	MemoryContext cxt = AllocSetContextCreate(ApplyRelContext, "concord apply relation",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	ConcordRelationMsg *remote = concord_read_relation(msg);
	bool		found;
	ApplyRel   *arel = hash_search(ApplyRels, &remote->remoteid, HASH_ENTER, &found);

	if (found)
		MemoryContextDelete(arel->cxt);
	memset(((char *) arel) + sizeof(Oid), 0, sizeof(ApplyRel) - sizeof(Oid));
	arel->cxt = cxt;
	arel->remote = remote;
	arel->qualname = quote_qualified_identifier(remote->nspname, remote->relname);
	MemoryContextSwitchTo(oldcxt);
}

/* The copy's LSN, when the sync worker copied this table. */
static void
find_sync_lsn(ApplyRel *arel)
{
	ListCell   *lc;

	foreach(lc, SyncedTables)
	{
		ConcordSubTable *st = lfirst(lc);

		if (!st->pending &&
			strcmp(st->nspname, arel->remote->nspname) == 0 &&
			strcmp(st->relname, arel->remote->relname) == 0)
		{
			arel->synced = true;
			arel->sync_lsn = st->sync_lsn;
		}
	}
}

static void
map_columns(ApplyRel *arel, Relation rel)
{
	ConcordRelationMsg *remote = arel->remote;
	int			n = Max(remote->natts, 1);

	/* The input functions keep their own caches (fn_extra) there too. */
	arel->map_cxt = AllocSetContextCreate(arel->cxt, "concord apply column map",
										  ALLOCSET_SMALL_SIZES);
	arel->attmap = MemoryContextAllocZero(arel->map_cxt, sizeof(AttrNumber) * n);
	arel->typinput = MemoryContextAllocZero(arel->map_cxt, sizeof(Oid) * n);
	arel->typioparam = MemoryContextAllocZero(arel->map_cxt, sizeof(Oid) * n);
	arel->typinfmgr = MemoryContextAllocZero(arel->map_cxt, sizeof(FmgrInfo) * n);
	arel->keyhash = NULL;
	for (int i = 0; i < remote->natts; i++)
	{
		AttrNumber	attnum = get_attnum(RelationGetRelid(rel), remote->atts[i].name);
		Form_pg_attribute att;

		if (attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("subscription \"%s\": column \"%s\" of relation %s does not exist on this node",
							SubName, remote->atts[i].name, arel->qualname),
					 errhint("Add the column on the subscriber; the subscription retries the change.")));
		att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
		arel->attmap[i] = attnum;
		getTypeInputInfo(att->atttypid, &arel->typinput[i], &arel->typioparam[i]);
		fmgr_info_cxt(arel->typinput[i], &arel->typinfmgr[i], arel->map_cxt);
	}
	arel->not_sent = NULL;
	for (int j = 0; j < RelationGetDescr(rel)->natts; j++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), j);
		bool		sent = false;

		for (int i = 0; i < remote->natts && !sent; i++)
			sent = arel->attmap[i] == att->attnum;
		if (!sent && !att->attisdropped && !att->attgenerated)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(arel->map_cxt);

			arel->not_sent = bms_add_member(arel->not_sent, att->attnum);
			MemoryContextSwitchTo(oldcxt);
		}
	}
}

/* Marks every relation for a new lookup (the resolver GUC changed). */
void
concord_apply_rel_forget_all(void)
{
	apply_rel_invalidate((Datum) 0, InvalidOid);
}

/*
 * The columns of the index apply finds rows by here (replica identity,
 * else primary key) must each be sent as part of the provider's key: an
 * UPDATE or DELETE carries only those, and a local key column the provider
 * does not send as key would be searched as NULL, and every such change
 * would silently find no row (review #25).  Returns why not, or NULL.
 */
static char *
key_problem(ApplyRel *arel, Relation rel)
{
	Oid			idx = RelationGetReplicaIndex(rel);
	Relation	irel;
	char	   *problem = NULL;

	if (!OidIsValid(idx))
		idx = RelationGetPrimaryKeyIndex(rel);
	if (!OidIsValid(idx) || arel->remote->replident == REPLICA_IDENTITY_FULL)
		return NULL;
	irel = index_open(idx, AccessShareLock);
	for (int k = 0; k < irel->rd_index->indnkeyatts && problem == NULL; k++)
	{
		AttrNumber	attnum = irel->rd_index->indkey.values[k];
		bool		keyed = false;

		for (int i = 0; i < arel->remote->natts; i++)
			if (arel->attmap[i] == attnum)
				keyed = arel->remote->atts[i].is_key;
		if (!keyed)
			problem = MemoryContextStrdup(arel->map_cxt,
										  psprintf("column \"%s\" of the key of %s here is not part of the provider's key",
												   get_attname(RelationGetRelid(rel), attnum, false),
												   arel->qualname));
	}
	index_close(irel, AccessShareLock);
	return problem;
}

/*
 * Under REPLICA IDENTITY FULL, the index whose columns identify a row
 * here: the replica identity index, the primary key, else the first
 * unique index that could be a key (valid, immediate, btree, plain
 * columns that are all NOT NULL, no predicate).  InvalidOid if none.
 */
static Oid
full_identity_index(Relation rel)
{
	Oid			idx = RelationGetReplicaIndex(rel);
	ListCell   *lc;

	if (!OidIsValid(idx))
		idx = RelationGetPrimaryKeyIndex(rel);
	if (OidIsValid(idx))
		return idx;
	foreach(lc, RelationGetIndexList(rel))
	{
		Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index index = irel->rd_index;
		bool		usable = index->indisunique && index->indimmediate &&
			index->indisvalid && irel->rd_rel->relam == BTREE_AM_OID &&
			heap_attisnull(irel->rd_indextuple, Anum_pg_index_indexprs, NULL) &&
			heap_attisnull(irel->rd_indextuple, Anum_pg_index_indpred, NULL);

		for (int k = 0; k < index->indnkeyatts && usable; k++)
		{
			AttrNumber	attnum = index->indkey.values[k];

			usable = attnum > 0 &&
				TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attnotnull;
		}
		index_close(irel, AccessShareLock);
		if (usable)
			return lfirst_oid(lc);
	}
	return InvalidOid;
}

/*
 * The columns that identify a row, for the history's key, messages and the
 * check of a handler's row: the provider's key; under REPLICA IDENTITY
 * FULL, which sends every column as key, the columns of the local index
 * full_identity_index() finds, when the provider sends them all (a 20 kB
 * value is no key); else every column.
 */
static void
choose_rowkey(ApplyRel *arel, Relation rel)
{
	ConcordRelationMsg *remote = arel->remote;
	Oid			idx = remote->replident == REPLICA_IDENTITY_FULL ?
		full_identity_index(rel) : InvalidOid;
	MemoryContext oldcxt = MemoryContextSwitchTo(arel->map_cxt);

	arel->rowkey = palloc0(sizeof(bool) * Max(remote->natts, 1));
	if (OidIsValid(idx))
	{
		Relation	irel = index_open(idx, AccessShareLock);

		for (int k = 0; k < irel->rd_index->indnkeyatts && OidIsValid(idx); k++)
		{
			bool		sent = false;

			for (int i = 0; i < remote->natts; i++)
				if (arel->attmap[i] == irel->rd_index->indkey.values[k])
					sent = arel->rowkey[i] = true;
			if (!sent)
				idx = InvalidOid;
		}
		index_close(irel, AccessShareLock);
	}
	arel->key_columns = NIL;
	for (int i = 0; i < remote->natts; i++)
	{
		if (!OidIsValid(idx))
			arel->rowkey[i] = remote->atts[i].is_key;
		if (arel->rowkey[i])
			arel->key_columns = lappend(arel->key_columns, remote->atts[i].name);
	}
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Finds the local table and maps the columns, under a lock of the given
 * mode; errors out if it cannot.
 */
static void
resolve(ApplyRel *arel, LOCKMODE lockmode)
{
	RangeVar   *rv = makeRangeVar(arel->remote->nspname, arel->remote->relname, -1);
	Oid			relid = RangeVarGetRelid(rv, lockmode, true);
	Relation	rel;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("subscription \"%s\": relation %s does not exist on this node",
						SubName, arel->qualname),
				 errhint("Create the table on the subscriber; the subscription retries the change.")));
	rel = table_open(relid, NoLock);
	concord_check_replication_target(rel, SubName, arel->qualname);
	/*
	 * Changes name the provider's leaf tables; apply writes into tables,
	 * never routes rows into partitions (the initial copy does).
	 */
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subscription \"%s\": %s is a partitioned table on this node, a plain table on the provider",
						SubName, arel->qualname),
				 errhint("Partition the table the same way on both nodes (changes are applied partition by partition), or make it a plain table here; the subscription retries the change.")));
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("subscription \"%s\": %s is not a table on this node",
						SubName, arel->qualname)));
	if (arel->map_cxt)
		MemoryContextDelete(arel->map_cxt);
	arel->map_cxt = NULL;
	arel->attmap = NULL;
	arel->not_sent = NULL;
	arel->rowkey = NULL;
	arel->key_columns = NIL;
	map_columns(arel, rel);
	arel->user_code = concord_write_runs_user_code(rel, arel->not_sent);
	arel->key_problem = key_problem(arel, rel);
	choose_rowkey(arel, rel);
	table_close(rel, NoLock);
	arel->localid = relid;
	find_sync_lsn(arel);
	concord_resolvers_of(arel->localid, arel->resolver, arel->handler);
	arel->had_tombstones = concord_tombstone_any(relid);
	arel->resolved = true;
}

/*
 * The mapped relation of a change, its local table locked in lockmode
 * (until the apply transaction ends).  The lock comes first: taking it
 * reads the invalidations of DDL committed since the map was made, which
 * mark the map stale, so a map used here always matches the table as it
 * is while locked (review #6: an ALTER COLUMN TYPE committed between two
 * changes had the old map write an integer into a text column).
 */
ApplyRel *
concord_apply_rel_get(Oid remoteid, LOCKMODE lockmode)
{
	ApplyRel   *arel = hash_search(ApplyRels, &remoteid, HASH_FIND, NULL);

	if (arel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("subscription \"%s\": change for relation %u without its metadata",
						SubName, remoteid)));
	if (arel->resolved)
		LockRelationOid(arel->localid, lockmode);
	if (!arel->resolved)
		resolve(arel, lockmode);
	return arel;
}

/*
 * Whether slots a and b (of the local table) hold the same values, none
 * of them NULL, in the key columns the provider sends.
 */
bool
concord_apply_rel_same_key(ApplyRel *arel, TupleTableSlot *a, TupleTableSlot *b)
{
	slot_getallattrs(a);
	slot_getallattrs(b);
	for (int i = 0; i < arel->remote->natts; i++)
	{
		int			idx = arel->attmap[i] - 1;
		Form_pg_attribute att = TupleDescAttr(a->tts_tupleDescriptor, idx);

		if (!arel->rowkey[i])
			continue;
		if (a->tts_isnull[idx] || b->tts_isnull[idx] ||
			!datum_image_eq(a->tts_values[idx], b->tts_values[idx],
							att->attbyval, att->attlen))
			return false;
	}
	return true;
}
