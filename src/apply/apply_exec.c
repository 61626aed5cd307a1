/*-------------------------------------------------------------------------
 *
 * apply_exec.c
 *		The executor around one remote change: the table opened as its
 *		owner, slots filled from the remote tuple, the local row found by
 *		its key, and the three writes.
 *
 * Rows go through ExecSimpleRelationInsert/Update/Delete, as PostgreSQL's
 * own apply does: constraints are checked, indexes maintained and user
 * triggers fired as session_replication_role = replica says (the apply
 * worker runs with it).  Rows are found by the replica identity index (or
 * primary key), or by a full scan for REPLICA IDENTITY FULL without one.
 * What to write, and the conflicts, are apply_row.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply/apply_exec.h"

/*
 * Whether the current remote change wrote the table (its row, a handler's
 * row, a rival's deletion): if not, forward.c passes it on as it came.
 */
bool		concord_apply_change_written = false;

/*
 * Each write takes the current command id: a change may write twice, with
 * a CommandCounterIncrement between (a row inserted, then deleted again),
 * and a row trigger's lock of the old row must see the first write.
 */
void
concord_apply_row_insert(ResultRelInfo *rri, EState *estate, TupleTableSlot *slot)
{
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecSimpleRelationInsert(rri, estate, slot);
	concord_apply_change_written = true;
}

void
concord_apply_row_update(ResultRelInfo *rri, EState *estate, EPQState *epq,
		   TupleTableSlot *searchslot, TupleTableSlot *slot)
{
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecSimpleRelationUpdate(rri, estate, epq, searchslot, slot);
	concord_apply_change_written = true;
}

void
concord_apply_row_delete(ResultRelInfo *rri, EState *estate, EPQState *epq,
		   TupleTableSlot *searchslot)
{
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecSimpleRelationDelete(rri, estate, epq, searchslot);
	concord_apply_change_written = true;
}

/* What a conversion error names. */
typedef struct ColumnContext
{
	ApplyRel   *arel;
	int			col;
} ColumnContext;

/*
 * Executors kept through a remote transaction.  A table whose writes run
 * no code of a user's (ApplyRel.user_code) keeps its executor state, its
 * open indexes and its owner's privilege checks from its first change to
 * the end of the remote transaction, as one statement keeps them for all
 * its rows: each change still switches to the owner and back and ends
 * with its own command, but drops only its slots and per-row memory.  Up
 * to KEPT_MAX tables at once; they are closed before the commit
 * (concord_apply_exec_close_all) and forgotten at an abort, whose
 * resource owner releases what they hold.  Only the remote transaction's
 * top level keeps them (a subtransaction's resource owner would release
 * them at its end).
 */
#define KEPT_MAX	8

typedef struct KeptExec
{
	Oid			relid;
	AclMode		checked;		/* privileges checked in this transaction */
	ApplyExec  *ex;
} KeptExec;

static KeptExec Kept[KEPT_MAX];
static int	NKept = 0;
static bool KeptCallbacks = false;

static void
open_exec(ApplyExec *ex, Relation rel)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	ex->rel = rel;
	ex->estate = CreateExecutorState();
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(ex->rel);
	rte->relkind = ex->rel->rd_rel->relkind;
	rte->rellockmode = AccessShareLock;
	ExecInitRangeTable(ex->estate, list_make1(rte));
	ex->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(ex->rri, ex->rel, 1, NULL, 0);
	ExecOpenIndices(ex->rri, false);
	EvalPlanQualInit(&ex->epqstate, ex->estate, NULL, NIL, -1);
}

static void
close_exec(ApplyExec *ex)
{
	EvalPlanQualEnd(&ex->epqstate);
	ExecCloseIndices(ex->rri);
	/* the tables an AFTER trigger's firing opened (ExecGetTriggerResultRel) */
	ExecCloseResultRelations(ex->estate);
	ExecResetTupleTable(ex->estate->es_tupleTable, false);
	FreeExecutorState(ex->estate);
	table_close(ex->rel, NoLock);
}

static void
close_kept(int i)
{
	ApplyExec  *ex = Kept[i].ex;

	NKept--;
	memmove(&Kept[i], &Kept[i + 1], sizeof(KeptExec) * (NKept - i));
	concord_apply_batch_flush(ex);
	concord_apply_batch_free(ex);
	close_exec(ex);
	pfree(ex);
}

/* A new active snapshot, which sees the rows just written. */
static void
fresh_snapshot(void)
{
	PopActiveSnapshot();
	PushActiveSnapshot(GetTransactionSnapshot());
}

/*
 * Before a change (of relid; an INSERT if insert) or a message that this
 * node passes on (SEEN, relid invalid): the INSERTs held in batches
 * (apply_batch.c) are written first, all but a run of INSERTs that this
 * one continues, and the change's snapshot sees them.
 */
void
concord_apply_exec_flush_before(Oid relid, bool insert)
{
	bool		written = false;

	for (int i = 0; i < NKept; i++)
	{
		if (Kept[i].ex->nbatch == 0 || (Kept[i].relid == relid && insert))
			continue;
		concord_apply_batch_flush(Kept[i].ex);
		written = true;
	}
	if (written && ActiveSnapshotSet())
		fresh_snapshot();
}

/* The same for ex's own batch, before an INSERT that cannot join it. */
void
concord_apply_exec_flush(ApplyExec *ex)
{
	if (ex->nbatch == 0)
		return;
	concord_apply_batch_flush(ex);
	fresh_snapshot();
}

/* Closes the kept executors: before the commit, or a TRUNCATE. */
void
concord_apply_exec_close_all(void)
{
	while (NKept > 0)
		close_kept(NKept - 1);
}

static void
kept_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_PRE_COMMIT)
		concord_apply_exec_close_all();
	else if (event == XACT_EVENT_ABORT)
		NKept = 0;
}

static KeptExec *
find_kept(Oid relid)
{
	for (int i = 0; i < NKept; i++)
		if (Kept[i].relid == relid)
			return &Kept[i];
	return NULL;
}

/* Keeps the executor of rel, just opened, for the rest of the transaction. */
static KeptExec *
keep(Relation rel)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	KeptExec   *k;

	if (!KeptCallbacks)
	{
		RegisterXactCallback(kept_xact_callback, NULL);
		KeptCallbacks = true;
	}
	if (NKept == KEPT_MAX)
		close_kept(0);
	k = &Kept[NKept];
	k->relid = RelationGetRelid(rel);
	k->checked = 0;
	k->ex = palloc0(sizeof(ApplyExec));
	k->ex->kept = true;
	/* What open_exec allocates lives as long as the executor state. */
	open_exec(k->ex, rel);
	MemoryContextSwitchTo(oldcxt);
	NKept++;
	return k;
}

/* The table's owner, whose privileges are checked once per transaction. */
static void
become_owner_kept(KeptExec *k, AclMode mode)
{
	ApplyExec  *ex = k->ex;

	if ((mode & ~k->checked) != 0)
	{
		concord_become_table_owner_plain(ex->rel, mode, concord_remote_txn->sub_name,
										 &ex->owner);
		k->checked |= mode;
	}
	else
		concord_become_checked_owner(ex->rel, &ex->owner);
}

/*
 * The slots of the change that ends go, but those the result relation
 * keeps for itself (a trigger's old row: the trigger may not fire in apply
 * but its row is fetched all the same) stay, emptied.
 */
static void
drop_change_slots(ApplyExec *ex)
{
	ResultRelInfo *rri = ex->rri;
	TupleTableSlot *own[] = {rri->ri_ReturningSlot, rri->ri_TrigOldSlot,
		rri->ri_TrigNewSlot, rri->ri_newTupleSlot, rri->ri_oldTupleSlot,
	rri->ri_PartitionTupleSlot};
	MemoryContext oldcxt = MemoryContextSwitchTo(ex->estate->es_query_cxt);
	List	   *kept = NIL;
	ListCell   *lc;

	foreach(lc, ex->estate->es_tupleTable)
	{
		TupleTableSlot *slot = lfirst(lc);
		bool		is_own = false;

		for (int i = 0; i < (int) lengthof(own); i++)
			is_own |= slot == own[i];
		if (is_own)
		{
			ExecClearTuple(slot);
			kept = lappend(kept, slot);
		}
		else
			ExecDropSingleTupleTableSlot(slot);
	}
	list_free(ex->estate->es_tupleTable);
	ex->estate->es_tupleTable = kept;
	MemoryContextSwitchTo(oldcxt);

	/*
	 * No trigger fires in a kept table's writes; had one fired, the tables
	 * its firing opened would point at the slots just dropped.
	 */
	if (ex->estate->es_trig_target_relations != NIL)
	{
		ExecCloseResultRelations(ex->estate);
		ex->estate->es_trig_target_relations = NIL;
	}
}

/*
 * Opens the table for one remote change of the given kind, or takes its
 * kept executor, and from here to concord_apply_exec_end() runs as the
 * table's owner (owner.c): reading the change's values (domain checks),
 * the write, its defaults, constraints, indexes and triggers.
 */
ApplyExec *
concord_apply_exec_begin(ApplyRel *arel, AclMode mode)
{
	KeptExec   *k = find_kept(arel->localid);
	ApplyExec  *ex;
	Relation	rel;

	if (k != NULL && !arel->user_code)
	{
		ex = k->ex;
		become_owner_kept(k, mode);
	}
	else
	{
		/*
		 * Its user code was counted again since (the provider's columns
		 * changed): a kept executor goes.
		 */
		if (k != NULL)
			close_kept(k - Kept);
		rel = table_open(arel->localid, RowExclusiveLock);
		/* Only the remote transaction's own resource owner keeps anything. */
		if (!arel->user_code && GetCurrentTransactionNestLevel() == 1)
		{
			k = keep(rel);
			ex = k->ex;
			become_owner_kept(k, mode);
		}
		else
		{
			ex = palloc0(sizeof(ApplyExec));
			ex->rel = rel;
			if (arel->user_code)
				concord_become_table_owner(rel, mode, concord_remote_txn->sub_name,
										   &ex->owner);
			else
				concord_become_table_owner_plain(rel, mode, concord_remote_txn->sub_name,
												 &ex->owner);
			open_exec(ex, rel);
		}
	}
	AfterTriggerBeginQuery();
	return ex;
}

void
concord_apply_exec_end(ApplyExec *ex)
{
	AfterTriggerEndQuery(ex->estate);
	if (ex->kept)
	{
		drop_change_slots(ex);
		ResetPerTupleExprContext(ex->estate);
		concord_restore_user(&ex->owner);
	}
	else
	{
		concord_restore_user(&ex->owner);
		close_exec(ex);
		pfree(ex);
	}
	CommandCounterIncrement();
}

static void
column_error_context(void *arg)
{
	ColumnContext *ctx = arg;

	if (ctx->col >= 0)
		errcontext("remote column \"%s\" of relation %s",
				   ctx->arel->remote->atts[ctx->col].name, ctx->arel->qualname);
}

static void
check_tuple_shape(ApplyRel *arel, ConcordTuple *tup)
{
	if (tup->ncols != arel->remote->natts)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("tuple of relation %s has %d columns, its metadata %d",
						arel->qualname, tup->ncols, arel->remote->natts)));
}

/* Local columns the provider does not send get their defaults. */
static void
fill_defaults(ApplyExec *ex, ApplyRel *arel, Datum *values, bool *isnull)
{
	ExprContext *econtext = GetPerTupleExprContext(ex->estate);
	int			attnum = -1;

	while ((attnum = bms_next_member(arel->not_sent, attnum)) >= 0)
	{
		Expr	   *def = (Expr *) build_column_default(ex->rel, attnum);

		if (def == NULL)
			continue;
		values[attnum - 1] = ExecEvalExpr(ExecInitExpr(expression_planner(def), NULL),
										  econtext, &isnull[attnum - 1]);
	}
}

/*
 * Fills slot with the remote tuple.  base, when given, is the local row:
 * columns the provider did not send, and unchanged TOAST values, keep
 * their local value.  Without base, unsent columns of a row to write get
 * their defaults; a slot to search by key gets only the key columns.
 */
void
concord_apply_fill_slot(ApplyExec *ex, ApplyRel *arel, ConcordTuple *tup,
		  TupleTableSlot *slot, TupleTableSlot *base, FillMode mode)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	ColumnContext ctx = {arel, -1};
	ErrorContextCallback errcb = {error_context_stack, column_error_context, &ctx};

	check_tuple_shape(arel, tup);
	ExecClearTuple(slot);
	if (base)
	{
		slot_getallattrs(base);
		memcpy(slot->tts_values, base->tts_values, sizeof(Datum) * desc->natts);
		memcpy(slot->tts_isnull, base->tts_isnull, sizeof(bool) * desc->natts);
	}
	else
	{
		memset(slot->tts_isnull, true, sizeof(bool) * desc->natts);
		if (arel->not_sent != NULL && mode == FILL_ROW)
			fill_defaults(ex, arel, slot->tts_values, slot->tts_isnull);
	}

	error_context_stack = &errcb;
	for (int i = 0; i < tup->ncols; i++)
	{
		int			idx = arel->attmap[i] - 1;

		ctx.col = i;
		/* A search only needs the key; FULL identity marks every column. */
		if (tup->kinds[i] == CONCORD_COL_NULL ||
			(mode != FILL_ROW && tup->kinds[i] == CONCORD_COL_UNCHANGED) ||
			(mode == FILL_KEY && !arel->remote->atts[i].is_key))
			slot->tts_isnull[idx] = true;
		else if (tup->kinds[i] == CONCORD_COL_TEXT)
		{
			slot->tts_values[idx] =
				InputFunctionCall(&arel->typinfmgr[i], tup->values[i].data,
								  arel->typioparam[i],
								  TupleDescAttr(desc, idx)->atttypmod);
			slot->tts_isnull[idx] = false;
		}
		else if (base == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unchanged TOAST value without a local row")));
	}
	error_context_stack = errcb.previous;
	ExecStoreVirtualTuple(slot);
	ExecMaterializeSlot(slot);
}

/* Finds and locks the local row matching searchslot's key. */
bool
concord_apply_find_local(ApplyExec *ex, TupleTableSlot *searchslot, TupleTableSlot *localslot)
{
	Oid			idx = RelationGetReplicaIndex(ex->rel);

	if (!OidIsValid(idx))
		idx = RelationGetPrimaryKeyIndex(ex->rel);
	if (OidIsValid(idx))
		return RelationFindReplTupleByIndex(ex->rel, idx, LockTupleExclusive,
											searchslot, localslot);
	return RelationFindReplTupleSeq(ex->rel, LockTupleExclusive, searchslot,
									localslot);
}

bool
concord_apply_has_key_index(Relation rel)
{
	return OidIsValid(RelationGetReplicaIndex(rel)) ||
		OidIsValid(RelationGetPrimaryKeyIndex(rel));
}
