/*-------------------------------------------------------------------------
 *
 * apply_exec.h
 *		The executor around one remote change (apply_exec.c), shared by the
 *		files that write rows (apply_row.c, apply_batch.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_APPLY_EXEC_H
#define CONCORD_APPLY_EXEC_H

#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "utils/rel.h"

#include "apply/apply.h"

/*
 * One table's executor state for one change, or kept through the remote
 * transaction (apply_exec.c).
 */
typedef struct ApplyExec
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	EPQState	epqstate;
	ConcordAsOwner owner;		/* the user to return to at concord_apply_exec_end() */
	bool		kept;			/* open until the transaction ends */
	TupleTableSlot **batch;		/* INSERTs not written yet (apply_batch.c) */
	int			nbatch;
	Size		batch_bytes;
} ApplyExec;

/* What concord_apply_fill_slot() fills a slot for. */
typedef enum FillMode
{
	FILL_ROW,					/* a row to write */
	FILL_KEY,					/* only the key, to search */
	FILL_SEEN					/* what was sent, for the history */
} FillMode;

extern bool concord_apply_change_written;
extern bool concord_apply_replay_wanted;

extern ApplyExec *concord_apply_exec_begin(ApplyRel *arel, AclMode mode);
extern void concord_apply_exec_end(ApplyExec *ex);
extern void concord_apply_exec_close_all(void);
extern void concord_apply_exec_flush_before(Oid relid, bool insert);
extern void concord_apply_exec_flush(ApplyExec *ex);
extern bool concord_apply_batch_possible(ApplyExec *ex, ApplyRel *arel);
extern void concord_apply_batch_add(ApplyExec *ex, TupleTableSlot *slot);
extern void concord_apply_batch_flush(ApplyExec *ex);
extern void concord_apply_batch_free(ApplyExec *ex);
extern void concord_apply_fill_slot(ApplyExec *ex, ApplyRel *arel, ConcordTuple *tup,
									TupleTableSlot *slot, TupleTableSlot *base,
									FillMode mode);
extern bool concord_apply_find_local(ApplyExec *ex, TupleTableSlot *searchslot,
									 TupleTableSlot *localslot);
extern bool concord_apply_has_key_index(Relation rel);
extern void concord_apply_row_insert(ResultRelInfo *rri, EState *estate,
									 TupleTableSlot *slot);
extern void concord_apply_row_update(ResultRelInfo *rri, EState *estate, EPQState *epq,
									 TupleTableSlot *searchslot, TupleTableSlot *slot);
extern void concord_apply_row_delete(ResultRelInfo *rri, EState *estate, EPQState *epq,
									 TupleTableSlot *searchslot);

#endif							/* CONCORD_APPLY_EXEC_H */
