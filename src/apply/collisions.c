/*-------------------------------------------------------------------------
 *
 * collisions.c
 *		The rows a remote INSERT or UPDATE would collide with through the
 *		table's unique indexes, found before it is written (careful apply).
 *
 * apply_row.c decides the collision as a conflict (insert_exists,
 * update_exists, multiple_unique_conflicts); here the rows are found and
 * locked, by an index scan per unique index with a dirty snapshot, as
 * PostgreSQL's own apply finds a row by its replica identity.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "catalog/pg_am.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply/apply.h"

/*
 * Whether unique index i of rri can collide with a row other than the key's:
 * a plain btree unique index, the key's own index only when with_key (an
 * UPDATE, which may move its row onto another row's key).
 */
static bool
other_unique_index(ResultRelInfo *rri, int i, bool with_key)
{
	IndexInfo  *ii = rri->ri_IndexRelationInfo[i];
	Relation	idx = rri->ri_IndexRelationDescs[i];
	Oid			keyidx = RelationGetReplicaIndex(rri->ri_RelationDesc);

	if (!OidIsValid(keyidx))
		keyidx = RelationGetPrimaryKeyIndex(rri->ri_RelationDesc);
	if (!ii->ii_Unique || ii->ii_Expressions != NIL || ii->ii_Predicate != NIL ||
		(RelationGetRelid(idx) == keyidx && !with_key) ||
		idx->rd_rel->relam != BTREE_AM_OID)
		return false;
	for (int k = 0; k < ii->ii_NumIndexKeyAttrs; k++)
		if (ii->ii_IndexAttrNumbers[k] == 0)
			return false;
	return true;
}

/*
 * Finds and locks a row other than skip whose columns of unique index i
 * equal those of row.  A NULL never collides.
 */
static bool
find_by_index(ResultRelInfo *rri, int i, TupleTableSlot *row, ItemPointer skip,
			  TupleTableSlot *out)
{
	IndexInfo  *ii = rri->ri_IndexRelationInfo[i];
	Relation	idx = rri->ri_IndexRelationDescs[i];
	int			nkeys = ii->ii_NumIndexKeyAttrs;
	ScanKeyData skey[INDEX_MAX_KEYS];
	SnapshotData snap;
	IndexScanDesc scan;
	bool		found;

	slot_getallattrs(row);
	for (int k = 0; k < nkeys; k++)
	{
		AttrNumber	attno = ii->ii_IndexAttrNumbers[k];
		Oid			optype = idx->rd_opcintype[k];
		Oid			op = get_opfamily_member(idx->rd_opfamily[k], optype, optype,
											 BTEqualStrategyNumber);

		if (row->tts_isnull[attno - 1])
			return false;
		if (!OidIsValid(op))
			elog(ERROR, "missing equality operator for type %u in opfamily %u",
				 optype, idx->rd_opfamily[k]);
		ScanKeyInit(&skey[k], k + 1, BTEqualStrategyNumber, get_opcode(op),
					row->tts_values[attno - 1]);
		skey[k].sk_collation = idx->rd_indcollation[k];
	}

	InitDirtySnapshot(snap);
	scan = index_beginscan(rri->ri_RelationDesc, idx, &snap, nkeys, 0);
retry:
	found = false;
	index_rescan(scan, skey, nkeys, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, out))
	{
		TransactionId xwait = TransactionIdIsValid(snap.xmin) ? snap.xmin : snap.xmax;
		TM_FailureData tmfd;
		TM_Result	res;

		if (skip && ItemPointerEquals(skip, &out->tts_tid))
			continue;
		if (TransactionIdIsValid(xwait))
		{
			XactLockTableWait(xwait, NULL, NULL, XLTW_None);
			goto retry;
		}
		PushActiveSnapshot(GetLatestSnapshot());
		res = table_tuple_lock(rri->ri_RelationDesc, &out->tts_tid, GetLatestSnapshot(), out,
							   GetCurrentCommandId(false), LockTupleExclusive,
							   LockWaitBlock, 0, &tmfd);
		PopActiveSnapshot();
		if (res == TM_Updated || res == TM_Deleted)
			goto retry;
		if (res != TM_Ok)
			elog(ERROR, "unexpected table_tuple_lock status: %u", res);
		found = true;
		break;
	}
	index_endscan(scan);
	return found;
}

/*
 * The rows other than skip that row collides with through the table's
 * unique indexes (plain btree ones: an expression or partial unique index
 * still raises its violation), each locked.  The key's index counts only
 * with_key: an INSERT's row of its own key is its target, not a rival,
 * while an UPDATE that changes its key collides with the row that has the
 * new key (review #12: update_exists, as PostgreSQL 18 calls it; it was a
 * unique violation that stopped the subscription for good).
 */
List *
concord_apply_find_collisions(ResultRelInfo *rri, EState *estate,
							  TupleTableSlot *row, TupleTableSlot *skip,
							  bool with_key)
{
	List	   *rows = NIL;

	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		TupleTableSlot *other;
		bool		seen = false;
		ListCell   *lc;

		if (!other_unique_index(rri, i, with_key))
			continue;
		other = table_slot_create(rri->ri_RelationDesc, &estate->es_tupleTable);
		if (!find_by_index(rri, i, row, skip ? &skip->tts_tid : NULL, other))
			continue;
		foreach(lc, rows)
			seen |= ItemPointerEquals(&((TupleTableSlot *) lfirst(lc))->tts_tid,
									  &other->tts_tid);
		if (!seen)
			rows = lappend(rows, other);
	}
	return rows;
}
