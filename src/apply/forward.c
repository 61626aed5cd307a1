/*-------------------------------------------------------------------------
 *
 * forward.c
 *		Passing on the remote changes apply did not apply (issue 17).
 *
 * A node in the middle of a ring or star forwards what its WAL shows.  A
 * change it received but did not write (a DELETE that found no row, an
 * UPDATE or INSERT that lost to a local version or a tombstone, one its
 * resolver skipped) leaves nothing there, yet the nodes after it may hold
 * a state where that change wins.  So apply logs such a change as a
 * transactional logical message, in the transaction that applies its
 * remote transaction (whose origin and commit timestamp are the change's
 * own); the output plugin ships it as an ordinary change to the
 * subscribers that take that origin (capture/output.c), and each of them
 * decides by its own state and resolver.  Subscribers that do not forward
 * the origin (a mesh) get nothing of it.
 *
 * The message holds the local table's OID, the change's kind, its old row
 * (key, or whole row under REPLICA IDENTITY FULL) and new row as heap
 * tuples of the local table, and the columns that go on as unchanged.
 * A node further on that needs a value the change did not carry reads it
 * from this node (apply/unsent.c), which does not hold the change's
 * version: apply fills in an UPDATE's unchanged out-of-line values before
 * logging it where a node further on may need them (apply_row.c,
 * forward_update()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "executor/tuptable.h"
#include "libpq/pqformat.h"
#include "replication/message.h"
#include "utils/rel.h"

#include "apply/apply.h"

static void
send_heap_tuple(StringInfo buf, TupleTableSlot *slot)
{
	HeapTuple	tuple = ExecCopySlotHeapTuple(slot);

	pq_sendint32(buf, tuple->t_len);
	pq_sendbytes(buf, (char *) tuple->t_data, tuple->t_len);
	heap_freetuple(tuple);
}

/*
 * Logs the change for the output plugin.  oldslot: its old row as sent
 * (oldkind), NULL if none; newslot: its new row.  The columns that go on
 * as unchanged: those newtup (an UPDATE's, or NULL) left unchanged, and
 * with keep_unsent, the columns the provider does not send (an UPDATE over
 * a local row, whose values the next node keeps, as it would had this
 * node applied it).  Otherwise those go with newslot's values, the
 * defaults this node would have inserted.
 */
void
concord_apply_forward(ApplyRel *arel, Relation rel, char action, char oldkind,
					  TupleTableSlot *oldslot, TupleTableSlot *newslot,
					  ConcordTuple *newtup, bool keep_unsent)
{
	StringInfoData buf;

	initStringInfo(&buf);
	pq_sendint32(&buf, RelationGetRelid(rel));
	pq_sendbyte(&buf, action);
	pq_sendbyte(&buf, oldslot ? oldkind : CONCORD_OLD_NONE);
	if (oldslot)
		send_heap_tuple(&buf, oldslot);
	if (action != CONCORD_MSG_DELETE)
	{
		Bitmapset  *unchanged = keep_unsent ? bms_copy(arel->not_sent) : NULL;
		int			attnum = -1;

		for (int i = 0; newtup && i < newtup->ncols && i < arel->remote->natts; i++)
			if (newtup->kinds[i] == CONCORD_COL_UNCHANGED)
				unchanged = bms_add_member(unchanged, arel->attmap[i]);

		/*
		 * Those columns go as NULL in the payload: what the slot holds there
		 * is the local row's, possibly a pointer into this node's TOAST
		 * table, which nobody downstream is to read.
		 */
		slot_getallattrs(newslot);
		while ((attnum = bms_next_member(unchanged, attnum)) >= 0)
			newslot->tts_isnull[attnum - 1] = true;
		send_heap_tuple(&buf, newslot);
		pq_sendint16(&buf, bms_num_members(unchanged));
		attnum = -1;
		while ((attnum = bms_next_member(unchanged, attnum)) >= 0)
			pq_sendint16(&buf, attnum);
	}
	(void) LogLogicalMessage(CONCORD_UNAPPLIED_PREFIX, buf.data, buf.len, true);
	pfree(buf.data);
}
