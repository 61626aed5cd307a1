/*-------------------------------------------------------------------------
 *
 * key_lock.c
 *		Apply workers of one database take turns on each key.
 *
 * Two workers applying changes of the same row from two origins at once (a
 * DELETE here, an UPDATE that brings the row back there) could each decide
 * on what the other had not committed yet (a row or a tombstone) and leave
 * both; one after the other, the second sees what the first did.  So when
 * a database has several subscriptions, each remote change locks its key
 * until its transaction ends: an advisory lock on (table, hash of the key),
 * shown in pg_locks with objsubid 192.
 *
 * The locks are hierarchical, so that a transaction of any size applies
 * whatever max_locks_per_transaction is: a key lock is taken under a share
 * lock on the table's own tag (key hash 0); once a remote transaction holds
 * max_locks_per_transaction key locks, it tries to take the table's tag
 * exclusively instead, which covers every key of the table, and no more
 * key locks.  It only tries: two workers that both hold the share lock and
 * both wait for the exclusive one deadlock (the detector makes one retry
 * its transaction), so a worker that cannot have it at once goes on with
 * key locks, and waits for it only past four times
 * max_locks_per_transaction (the lock table is shared: a few workers may
 * hold that many).  Under REPLICA IDENTITY FULL every column counts
 * as key, so two versions of one row would hash apart: such tables take
 * the table's tag exclusively at once.  Waits go through the lock manager,
 * so a deadlock between two workers is detected and one of them retries.
 *
 * The key's hash is made from the key's values as this node's columns
 * hold them, each hashed by the hash function of the equality its key
 * index compares it with, under the index's collation, in the local
 * column order: keys the index finds equal hash alike whatever text and
 * column order their providers sent (numeric 1.0 and 1.00, 'A' and 'a'
 * under a case-insensitive collation).  A column whose equality has no
 * hash function is hashed by its text (review #16).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/transam.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/lock.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/lsyscache.h"

#include "apply/apply.h"
#include "conflict/conflict.h"

/* Distinguishes concord's key locks from pg_advisory_lock()'s (1 and 2). */
#define CONCORD_KEY_LOCK_FIELD4 0xC0

/*
 * Whether changes take a lock on their key (other apply workers of this
 * database may change the same rows); set at each remote BEGIN.
 */
bool		concord_apply_lock_keys = false;

/*
 * This remote transaction's key locks, and the tables locked in share mode
 * and whole: in TopTransactionContext, forgotten at each remote BEGIN.
 */
static int	KeyLocks = 0;
static List *TablesShared = NIL;
static List *TablesWhole = NIL;

/* A remote transaction begins: the locks of the last one are gone. */
void
concord_apply_key_locks_reset(void)
{
	KeyLocks = 0;
	TablesShared = NIL;
	TablesWhole = NIL;
}

/* "col=value, ..." of the columns that identify the row, for messages. */
char *
concord_apply_key_text(ApplyRel *arel, ConcordTuple *tup)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < tup->ncols && i < arel->remote->natts; i++)
	{
		if (!arel->rowkey[i])
			continue;
		appendStringInfo(&buf, "%s%s=%s", buf.len ? ", " : "",
						 quote_identifier(arel->remote->atts[i].name),
						 tup->kinds[i] == CONCORD_COL_TEXT ?
						 tup->values[i].data : "NULL");
	}
	return buf.data;
}

/*
 * How each remote column is hashed: the key columns by the hash function
 * of the equality their key index compares them with, under the index's
 * collation; 'A' and 'a' under a case-insensitive collation, numeric 1.0
 * and 1.00 hash alike, as the index finds them alike.
 */
typedef struct KeyHash
{
	bool	   *hashed;			/* per remote column: part of the hash */
	FmgrInfo   *hashfn;			/* per remote column; fn_oid InvalidOid:
								 * hash the text */
	Oid		   *collation;
	bool		as_owner;		/* a hashed column's type was made by a user
								 * (a domain's checks, its input function):
								 * convert as the table's owner */
} KeyHash;

/* The index apply finds rows by: replica identity, else primary key. */
static Oid
key_index(Relation rel)
{
	Oid			idx = RelationGetReplicaIndex(rel);

	return OidIsValid(idx) ? idx : RelationGetPrimaryKeyIndex(rel);
}

static KeyHash *
make_key_hash(ApplyRel *arel, Relation rel)
{
	int			n = Max(arel->remote->natts, 1);
	KeyHash    *kh = MemoryContextAllocZero(arel->map_cxt, sizeof(KeyHash));
	Oid			idxoid = key_index(rel);
	Relation	idx = OidIsValid(idxoid) ? index_open(idxoid, AccessShareLock) : NULL;

	kh->hashed = MemoryContextAllocZero(arel->map_cxt, sizeof(bool) * n);
	kh->hashfn = MemoryContextAllocZero(arel->map_cxt, sizeof(FmgrInfo) * n);
	kh->collation = MemoryContextAllocZero(arel->map_cxt, sizeof(Oid) * n);
	for (int i = 0; i < arel->remote->natts; i++)
	{
		kh->hashed[i] = arel->remote->atts[i].is_key && arel->attmap[i] > 0;
		kh->hashfn[i].fn_oid = InvalidOid;
		for (int k = 0; idx && kh->hashed[i] && k < IndexRelationGetNumberOfKeyAttributes(idx); k++)
		{
			Oid			eqop;
			RegProcedure hashproc = InvalidOid;

			if (idx->rd_index->indkey.values[k] != arel->attmap[i])
				continue;
			eqop = get_opfamily_member(idx->rd_opfamily[k], idx->rd_opcintype[k],
									   idx->rd_opcintype[k], BTEqualStrategyNumber);
			if (OidIsValid(eqop) && get_op_hash_functions(eqop, &hashproc, NULL) &&
				OidIsValid(hashproc))
				fmgr_info_cxt(hashproc, &kh->hashfn[i], arel->map_cxt);
			kh->collation[i] = idx->rd_indcollation[k];
		}
		if (OidIsValid(kh->hashfn[i].fn_oid) &&
			(TupleDescAttr(RelationGetDescr(rel), arel->attmap[i] - 1)->atttypid >= FirstNormalObjectId ||
			 arel->typinput[i] >= FirstNormalObjectId))
			kh->as_owner = true;
	}
	if (idx)
		index_close(idx, AccessShareLock);
	return kh;
}

/* The hash of one key column's value, as the local column holds it. */
static uint32
column_hash(ApplyRel *arel, ConcordTuple *tup, int i, Form_pg_attribute att)
{
	KeyHash    *kh = arel->keyhash;
	Datum		value;

	if (tup->kinds[i] != CONCORD_COL_TEXT)
		return 0;
	if (!OidIsValid(kh->hashfn[i].fn_oid))
		return DatumGetUInt32(hash_any((unsigned char *) tup->values[i].data,
									   strlen(tup->values[i].data)));
	value = InputFunctionCall(&arel->typinfmgr[i], tup->values[i].data,
							  arel->typioparam[i], att->atttypmod);
	return DatumGetUInt32(FunctionCall1Coll(&kh->hashfn[i], kh->collation[i], value));
}

/*
 * The hash of the key: its local columns' hashes, in local column order.
 * As the table's owner, like the writes (owner.c), when a key column's
 * type was made by a user: a domain's input function runs the domain's
 * CHECK constraints.  Built-in types' input functions run no user code,
 * and the switch (a GUC nest level per change) is skipped for them.
 */
static uint32
key_hash(ApplyRel *arel, ConcordTuple *tup)
{
	Relation	rel = relation_open(arel->localid, NoLock);
	TupleDesc	desc = RelationGetDescr(rel);
	uint32	   *hashes = palloc0(sizeof(uint32) * desc->natts);
	uint32		hash = 0;
	ConcordAsOwner owner;

	if (arel->keyhash == NULL)
		arel->keyhash = make_key_hash(arel, rel);
	if (arel->keyhash->as_owner)
		concord_become_table_owner(rel, 0, concord_remote_txn->sub_name, &owner);
	for (int i = 0; i < tup->ncols && i < arel->remote->natts; i++)
		if (arel->keyhash->hashed[i])
			hashes[arel->attmap[i] - 1] =
				column_hash(arel, tup, i, TupleDescAttr(desc, arel->attmap[i] - 1)) | 1;
	if (arel->keyhash->as_owner)
		concord_restore_user(&owner);
	for (int a = 0; a < desc->natts; a++)
		if (hashes[a] != 0)
			hash = hash_combine(hash, hashes[a]);
	relation_close(rel, NoLock);
	pfree(hashes);
	/* 0 is the table's own tag */
	return hash == 0 ? 1 : hash;
}

/* Takes a lock; false if !wait and it is not free, or if held already. */
static bool
lock_tag(Oid relid, uint32 hash, LOCKMODE mode, bool wait)
{
	LOCKTAG		tag;
	LockAcquireResult res;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, relid, hash, CONCORD_KEY_LOCK_FIELD4);
	res = LockAcquire(&tag, mode, false, !wait);
	return res == LOCKACQUIRE_OK;
}

/* Locks relid's whole table tag; false if !wait and another holds it. */
static bool
lock_whole(Oid relid, bool wait)
{
	if (!lock_tag(relid, 0, ExclusiveLock, wait) && !wait)
		return false;
	TablesWhole = lappend_oid(TablesWhole, relid);
	return true;
}

/*
 * Locks the key of a remote change until the transaction ends, or its
 * whole table (see the file's header).
 */
void
concord_apply_lock_key(ApplyRel *arel, ConcordTuple *tup)
{
	Oid			relid = arel->localid;
	MemoryContext oldcxt;
	uint32		hash;

	if (!concord_apply_lock_keys)
		return;
	if (list_member_oid(TablesWhole, relid))
		return;
	/*
	 * Only the lists live as long as the transaction; the hash is made in
	 * the caller's context, reset per change (a transaction may change a
	 * few rows millions of times).
	 */
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	if (arel->remote->replident == REPLICA_IDENTITY_FULL ||
		KeyLocks >= Max(max_locks_per_xact * 4, 64))
		(void) lock_whole(relid, true);
	else if (KeyLocks < Max(max_locks_per_xact, 16) || !lock_whole(relid, false))
	{
		if (!list_member_oid(TablesShared, relid))
		{
			(void) lock_tag(relid, 0, ShareLock, true);
			TablesShared = lappend_oid(TablesShared, relid);
		}
		MemoryContextSwitchTo(oldcxt);
		hash = key_hash(arel, tup);
		/* A key locked again (several changes of one row) counts once. */
		if (lock_tag(relid, hash, ExclusiveLock, true))
			KeyLocks++;
	}
	MemoryContextSwitchTo(oldcxt);
}
