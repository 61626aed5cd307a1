/*-------------------------------------------------------------------------
 *
 * apply_batch.c
 *		Runs of remote INSERTs into one table, written together.
 *
 * Within a remote transaction, the INSERTs into a table whose executor is
 * kept (apply_exec.c: its writes run no code of a user's) are gathered
 * and written by table_multi_insert, as COPY writes its rows: one WAL
 * record and one buffer lock per page rather than per row, then each
 * row's index entries.  In this node's WAL, and so for its own
 * subscribers, they stay in their order within the transaction: a batch
 * is written before any other change, and before a SEEN message is
 * logged again (concord_apply_exec_flush_before).  Only while apply looks for no conflict (not in
 * careful mode: a unique violation replays the transaction with
 * look-ups), and only into a table without tombstones (an INSERT that
 * finds one is weighed against the DELETE, row by row).  A batch is
 * written before anything else of the transaction happens: the next
 * change of another table, or of another kind, a TRUNCATE, the commit;
 * at the latest at BATCH_ROWS rows or BATCH_BYTES bytes.
 *
 * A DELETE that made a tombstone of the table meanwhile (a local session,
 * another subscription's worker) would have been weighed against each
 * INSERT written after it: a batch written after one appeared replays the
 * transaction with look-ups instead (concord_apply_replay_wanted).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply/apply_exec.h"
#include "apply/parallel.h"
#include "conflict/tombstone.h"

#define BATCH_ROWS		1000
#define BATCH_BYTES		65536

/* A batch met a tombstone made meanwhile: replay with look-ups. */
bool		concord_apply_replay_wanted = false;

/* Whether the INSERT just read may join ex's batch. */
bool
concord_apply_batch_possible(ApplyExec *ex, ApplyRel *arel)
{
	TriggerDesc *trig = ex->rri->ri_TrigDesc;

	if (!ex->kept || ex->rel->rd_rel->relkind != RELKIND_RELATION)
		return false;
	/*
	 * With several workers, another's DELETE of another key of the table
	 * would make the batch replay its transaction: only a unit that runs
	 * alone batches (parallel.h).
	 */
	if (!concord_pworker_alone())
		return false;
	/* BEFORE row triggers see each row as it is written, even idle ones */
	if (trig != NULL && (trig->trig_insert_before_row || trig->trig_insert_instead_row))
		return false;
	return !concord_tombstone_possible(arel->localid, &arel->had_tombstones);
}

/* Adds slot's row to ex's batch; writes the batch when it is full. */
void
concord_apply_batch_add(ApplyExec *ex, TupleTableSlot *slot)
{
	TupleTableSlot *copy;

	if (ex->batch == NULL)
		ex->batch = MemoryContextAllocZero(ex->estate->es_query_cxt,
										   sizeof(TupleTableSlot *) * BATCH_ROWS);
	if (ex->batch[ex->nbatch] == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(ex->estate->es_query_cxt);

		ex->batch[ex->nbatch] = table_slot_create(ex->rel, NULL);
		MemoryContextSwitchTo(oldcxt);
	}
	copy = ExecCopySlot(ex->batch[ex->nbatch], slot);
	ex->batch_bytes += ExecFetchSlotHeapTuple(copy, false, NULL)->t_len;
	ex->nbatch++;
	concord_apply_change_written = true;
	if (ex->nbatch == BATCH_ROWS || ex->batch_bytes >= BATCH_BYTES)
		concord_apply_batch_flush(ex);
}

/*
 * Writes ex's batch as the table's owner: constraints checked row by row,
 * the rows written together, then each row's index entries (a unique
 * violation among them replays the transaction with look-ups, as for one
 * row).
 */
void
concord_apply_batch_flush(ApplyExec *ex)
{
	ConcordAsOwner owner;
	Relation	rel = ex->rel;
	EState	   *estate = ex->estate;
	bool		known = false;
	bool		pushed = !ActiveSnapshotSet();

	if (ex->nbatch == 0)
		return;
	/* at the commit, or for a SEEN message, no change's snapshot is set */
	if (pushed)
		PushActiveSnapshot(GetTransactionSnapshot());
	concord_become_checked_owner(rel, &owner);
	AfterTriggerBeginQuery();
	for (int i = 0; i < ex->nbatch; i++)
	{
		if (rel->rd_att->constr)
			ExecConstraints(ex->rri, ex->batch[i], estate);
		if (rel->rd_rel->relispartition)
			ExecPartitionCheck(ex->rri, ex->batch[i], estate, true);
		ResetPerTupleExprContext(estate);
	}
	estate->es_output_cid = GetCurrentCommandId(true);
	table_multi_insert(rel, ex->batch, ex->nbatch, estate->es_output_cid, 0, NULL);
	for (int i = 0; i < ex->nbatch; i++)
	{
		List	   *recheck = NIL;

		if (ex->rri->ri_NumIndices > 0)
			recheck = ExecInsertIndexTuples(ex->rri, ex->batch[i], estate,
											false, false, NULL, NIL);
		ExecARInsertTriggers(estate, ex->rri, ex->batch[i], recheck, NULL);
		list_free(recheck);
		ResetPerTupleExprContext(estate);
	}
	AfterTriggerEndQuery(estate);
	for (int i = 0; i < ex->nbatch; i++)
		ExecClearTuple(ex->batch[i]);
	ex->nbatch = 0;
	ex->batch_bytes = 0;
	concord_restore_user(&owner);
	if (pushed)
		PopActiveSnapshot();
	CommandCounterIncrement();
	/* Without a key index, an INSERT looks for no tombstone. */
	if (concord_apply_has_key_index(rel) &&
		concord_tombstone_possible(RelationGetRelid(rel), &known))
	{
		concord_apply_replay_wanted = true;
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("a row of table %s was deleted while remote INSERTs into it were written together",
						RelationGetRelationName(rel)),
				 errdetail("The transaction is replayed with conflict detection.")));
	}
}

/* Drops ex's batch slots, when its executor closes. */
void
concord_apply_batch_free(ApplyExec *ex)
{
	if (ex->batch == NULL)
		return;
	for (int i = 0; i < BATCH_ROWS && ex->batch[i] != NULL; i++)
		ExecDropSingleTupleTableSlot(ex->batch[i]);
	ex->batch = NULL;
	ex->nbatch = 0;
}
