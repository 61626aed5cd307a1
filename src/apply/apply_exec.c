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

#include "apply/apply_exec.h"

/*
 * Whether the current remote change wrote the table (its row, a handler's
 * row, a rival's deletion): if not, forward.c passes it on as it came.
 */
bool		concord_apply_change_written = false;

void
concord_apply_row_insert(ResultRelInfo *rri, EState *estate, TupleTableSlot *slot)
{
	ExecSimpleRelationInsert(rri, estate, slot);
	concord_apply_change_written = true;
}

void
concord_apply_row_update(ResultRelInfo *rri, EState *estate, EPQState *epq,
		   TupleTableSlot *searchslot, TupleTableSlot *slot)
{
	ExecSimpleRelationUpdate(rri, estate, epq, searchslot, slot);
	concord_apply_change_written = true;
}

void
concord_apply_row_delete(ResultRelInfo *rri, EState *estate, EPQState *epq,
		   TupleTableSlot *searchslot)
{
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
 * Opens the table for one remote change of the given kind, and from here
 * to concord_apply_exec_end() runs as the table's owner (owner.c): reading the change's
 * values (domain checks), the write, its defaults, constraints, indexes and
 * triggers.
 */
void
concord_apply_exec_begin(ApplyExec *ex, ApplyRel *arel, AclMode mode)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	ex->rel = table_open(arel->localid, RowExclusiveLock);
	if (arel->user_code)
		concord_become_table_owner(ex->rel, mode, concord_remote_txn->sub_name, &ex->owner);
	else
		concord_become_table_owner_plain(ex->rel, mode, concord_remote_txn->sub_name,
										 &ex->owner);
	ex->estate = CreateExecutorState();
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(ex->rel);
	rte->relkind = ex->rel->rd_rel->relkind;
	rte->rellockmode = AccessShareLock;
	ExecInitRangeTable(ex->estate, list_make1(rte));
	ex->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(ex->rri, ex->rel, 1, NULL, 0);
	ex->estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(ex->rri, false);
	AfterTriggerBeginQuery();
	EvalPlanQualInit(&ex->epqstate, ex->estate, NULL, NIL, -1);
}

void
concord_apply_exec_end(ApplyExec *ex)
{
	EvalPlanQualEnd(&ex->epqstate);
	AfterTriggerEndQuery(ex->estate);
	ExecCloseIndices(ex->rri);
	ExecResetTupleTable(ex->estate->es_tupleTable, false);
	FreeExecutorState(ex->estate);
	concord_restore_user(&ex->owner);
	table_close(ex->rel, NoLock);
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
