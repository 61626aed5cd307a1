/*-------------------------------------------------------------------------
 *
 * apply_row.c
 *		Writes one remote change into a local table through the executor.
 *
 * The executor around the change is apply_exec.c's.  A row that is there when it should not be (insert_exists), or missing
 * when it should be there (update_missing, delete_missing), is a conflict
 * decided by conflict.c and recorded in the history in the same
 * transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "apply/apply.h"
#include "apply/parallel.h"
#include "apply/apply_exec.h"
#include "conflict/conflict.h"
#include "conflict/handler.h"
#include "conflict/tombstone.h"

/*
 * Whether an INSERT first looks for a row with its key.  Apply runs
 * without that look-up until an INSERT meets an existing key (a unique
 * violation): apply.c then replays the transaction with the look-ups on
 * for a while (see there).
 */
bool		concord_apply_careful = false;

/*
 * Apply wrote rows of the remote transaction that are not its changes (a
 * rival's delete, a losing row's): its writer's vector says nothing of
 * them (known.c).
 */
bool		concord_apply_side_writes = false;

/* Conflicts met in the current remote transaction. */
int			concord_apply_conflicts = 0;


static void
conflict_init(ConcordConflict *c, ConcordConflictType type, ApplyRel *arel,
			  ApplyExec *ex, TupleTableSlot *local, TupleTableSlot *remote,
			  ConcordTuple *remote_tuple)
{
	memset(c, 0, sizeof(ConcordConflict));
	c->key_text = remote_tuple ? concord_apply_key_text(arel, remote_tuple) : NULL;
	c->type = type;
	c->resolver = arel->resolver[type];
	c->handler = arel->handler[type];
	c->rel = ex->rel;
	c->relname = arel->qualname;
	c->key_columns = arel->key_columns;
	c->local = local;
	c->target = local;
	c->remote = remote;
}

/*
 * The handler's row must keep the key of the remote or the local row:
 * a handler moves no row to another key.
 */
static void
check_handler_key(ApplyRel *arel, ConcordConflict *c, TupleTableSlot *row)
{
	bool		same_as_remote = concord_apply_rel_same_key(arel, row, c->remote);
	bool		same_as_local = c->local != NULL &&
		concord_apply_rel_same_key(arel, row, c->local);

	if (!same_as_remote && !same_as_local)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("conflict handler %s returned a row with another key",
						format_procedure(c->handler)),
				 errdetail("The conflict is about %s.", c->key_text ? c->key_text : "a key")));
}

/*
 * A row trigger of the table, even one that does not fire in apply, has
 * the write fetch the old row into a slot the result relation keeps, with
 * its buffer pinned.  Made before the handler's subtransaction (its
 * descriptor is pinned by the transaction, not the subtransaction), and
 * emptied before the subtransaction ends (the pin is the subtransaction's).
 */
static void
trigger_slots(ApplyExec *ex, bool empty)
{
	ResultRelInfo *rri = ex->rri;

	if (rri->ri_TrigDesc == NULL)
		return;
	if (!empty)
	{
		(void) ExecGetTriggerOldSlot(ex->estate, rri);
		(void) ExecGetTriggerNewSlot(ex->estate, rri);
		return;
	}
	ExecClearTuple(rri->ri_TrigOldSlot);
	ExecClearTuple(rri->ri_TrigNewSlot);
}

/*
 * Runs the custom resolver's handler and writes its row, over the local
 * row or as a new row when there is none, in a subtransaction: whatever
 * goes wrong there (the handler raises or times out, its row breaks a
 * constraint or changes the key) skips the change, with the error in the
 * history, and the subscription goes on.
 */
static ConcordResolution
run_handler(ApplyExec *ex, ApplyRel *arel, ConcordConflict *c)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	TupleTableSlot *row = ExecInitExtraTupleSlot(ex->estate,
												 RelationGetDescr(ex->rel),
												 &TTSOpsVirtual);
	volatile ConcordResolution res = CONCORD_RESOLUTION_SKIP;
	bool		written = concord_apply_change_written;

	/* A handler may read any table: it sees every earlier unit applied. */
	concord_pworker_in_turn();
	trigger_slots(ex, false);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		if (concord_handler_call(c, row))
		{
			check_handler_key(arel, c, row);
			if (c->target)
				concord_apply_row_update(ex->rri, ex->estate, &ex->epqstate, c->target, row);
			else
				concord_apply_row_insert(ex->rri, ex->estate, row);
			c->handler_row = row;
			res = CONCORD_RESOLUTION_HANDLER_ROW;
		}
		else
			res = CONCORD_RESOLUTION_KEEP_LOCAL;
		trigger_slots(ex, true);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		trigger_slots(ex, true);
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		concord_apply_change_written = written;	/* its row was rolled back */
		if (!concord_handler_error_skips(edata))
			ReThrowError(edata);
		c->handler_row = NULL;
		c->error_message = edata->message;
		res = CONCORD_RESOLUTION_SKIP;
	}
	PG_END_TRY();
	return res;
}

/*
 * A remote UPDATE in a conflict: its row may lack out-of-line values it
 * left unchanged (unsent.c).  fullold is its old row under REPLICA
 * IDENTITY FULL, which has them.  base is the local row that c->remote
 * was filled over, NULL if none.  deleted: resolve() deleted the local row
 * (its remote version wins, and is gone at the provider).
 */
typedef struct RemoteUpdate
{
	ConcordTuple *keytup;
	ConcordTuple *newtup;
	ConcordTuple *fullold;
	TupleTableSlot *base;
	bool		deleted;
	bool		lost;
} RemoteUpdate;

/* c->remote filled again from the UPDATE's row (as first filled). */
static void
refill_remote(ApplyExec *ex, ApplyRel *arel, ConcordConflict *c,
			  RemoteUpdate *upd, FillMode mode)
{
	concord_apply_fill_slot(ex, arel, upd->newtup, c->remote, upd->base, mode);
}

/*
 * Makes c->remote the remote UPDATE's whole row to write: with the values
 * it did not send, over the local row or, without one, with the defaults
 * of the local columns the provider does not send.  Otherwise returns
 * why not (unsent.c), with the reason in c->error_message.
 */
static ConcordUnsent
complete_remote(ApplyExec *ex, ApplyRel *arel, ConcordConflict *c,
				RemoteUpdate *upd)
{
	ConcordUnsent got = CONCORD_UNSENT_READ;

	if (!concord_apply_tuple_complete(upd->newtup))
		got = concord_apply_fetch_unsent(arel, upd->keytup, upd->newtup,
										 &c->error_message);
	if (got == CONCORD_UNSENT_READ)
		refill_remote(ex, arel, c, upd, FILL_ROW);
	return got;
}

static bool
converges(ConcordResolver resolver)
{
	return resolver == CONCORD_RESOLVER_LAST_UPDATE_WINS ||
		resolver == CONCORD_RESOLVER_FIRST_UPDATE_WINS ||
		resolver == CONCORD_RESOLVER_REPLICA_PRIORITY;
}

/*
 * The remote UPDATE lost to a version here (a row or a delete) under a
 * resolver that decides by commit timestamps and node names, which are
 * the same on every node: every node further on that the version reaches
 * decides alike (forward_update()).  Not so under replica_priority (a
 * node's record of a priority may differ from another's), nor when there
 * was nothing to lose to (update_missing).
 */
static bool
lost_by_time(ConcordConflict *c, ConcordResolution res)
{
	return res == CONCORD_RESOLUTION_KEEP_LOCAL &&
		(c->resolver == CONCORD_RESOLVER_LAST_UPDATE_WINS ||
		 c->resolver == CONCORD_RESOLVER_FIRST_UPDATE_WINS) &&
		(c->local != NULL || c->local_deleted);
}

/*
 * A remote UPDATE that wins over a local row is gone at the provider (a
 * later DELETE there, or a change of its key): its values cannot be had,
 * and the local row lost to it.  The row goes here too, its tombstone
 * carrying the UPDATE's version; the later change that removed it there
 * reaches this node and settles the key (a key change finds the tombstone
 * and brings the row back under its new key, read from the provider).
 */
static void
delete_lost_row(ApplyExec *ex, ConcordConflict *c, RemoteUpdate *upd)
{
	concord_apply_row_delete(ex->rri, ex->estate, &ex->epqstate, c->local);
	concord_tombstone_record(ex->rel, c->local);
	concord_apply_side_writes = true;
	/* The UPDATE's own key, if it changed it: the provider's next change
	 * of the row looks for that one. */
	if (upd->keytup != upd->newtup)
		concord_tombstone_record(ex->rel, c->remote);
	c->error_message = psprintf("%s; the local row, which lost to the UPDATE, is deleted here as it is there",
								c->error_message);
	upd->deleted = true;
}

/*
 * Decides c: by its resolver, or by its handler (which also writes).  A
 * remote UPDATE (upd) that is to be written, kept for replay (skip) or
 * shown to a handler needs its whole row; without it, it is skipped, with
 * the reason in the history (or, gone at the provider while it wins over
 * a local row, that row is deleted: delete_lost_row()).  One that loses
 * keeps what it lacks out of the history: a marker stands there instead
 * (conflict.c).
 */
static ConcordResolution
resolve(ApplyExec *ex, ApplyRel *arel, ConcordConflict *c, RemoteUpdate *upd)
{
	ConcordResolution res = concord_conflict_resolve(c);
	bool		custom = c->resolver == CONCORD_RESOLVER_CUSTOM;
	ConcordUnsent got = CONCORD_UNSENT_READ;


	/* The old row has what the UPDATE did not send: no reason to lack it. */
	if (upd && upd->fullold && !concord_apply_tuple_complete(upd->newtup))
	{
		concord_apply_unsent_from_old(upd->newtup, upd->fullold);
		refill_remote(ex, arel, c, upd, upd->base ? FILL_ROW : FILL_SEEN);
	}
	if (upd && (custom || res != CONCORD_RESOLUTION_KEEP_LOCAL))
		got = complete_remote(ex, arel, c, upd);
	if (got == CONCORD_UNSENT_GONE && c->local && res == CONCORD_RESOLUTION_APPLY_REMOTE &&
		converges(c->resolver))
		delete_lost_row(ex, c, upd);
	else if (got != CONCORD_UNSENT_READ)
		res = CONCORD_RESOLUTION_SKIP;
	else if (custom)
		res = run_handler(ex, arel, c);
	if (upd && !concord_apply_tuple_complete(upd->newtup))
		c->unsent_columns = concord_apply_unsent_names(arel, upd->newtup);
	if (upd)
		upd->lost = lost_by_time(c, res);
	return res;
}

/*
 * A remote change that arrived after a version that followed it, written
 * by a node that had seen it (concord_conflict_remote_older()): every node
 * that had it first applied it and then that version over it; here the
 * version is already in place, and the change is not applied.  Not a
 * conflict: the two were not concurrent.
 */
static void
older_skipped(ApplyRel *arel, ConcordTuple *tuple, const char *kind)
{
	ereport(DEBUG1,
			(errmsg_internal("subscription \"%s\": a remote %s of %s (%s) is older than the version here, whose writer had seen it: not applied",
							 concord_remote_txn->sub_name, kind, arel->qualname,
							 concord_apply_key_text(arel, tuple))));
}

/*
 * A remote INSERT found a row with its key: the resolver picks a version;
 * the remote one replaces the local row.  Not if its writer had seen the
 * local version (its own, or one its SEEN vector covers): the key was
 * deleted there in between, by a DELETE still on its way here, and the
 * INSERT is the newer version, applied without a conflict; the DELETE,
 * when it comes, is older than it (known.c).  Nor if the local version's
 * writer had seen the INSERT: it is older, and skipped.  A row of the
 * common baseline (its version unknown) may have been deleted at the
 * writer by a change still on its way here: the INSERT is held until that
 * has come (causal.c), and then finds the DELETE's tombstone instead;
 * with nothing to wait for, it is a conflict.
 */
static void
insert_exists(ApplyExec *ex, ApplyRel *arel, TupleTableSlot *local,
			  TupleTableSlot *remote, ConcordTuple *newtup)
{
	ConcordConflict c;
	ConcordResolution res;
	char	   *overtook = NULL;

	conflict_init(&c, CONCORD_CONFLICT_INSERT_EXISTS, arel, ex, local, remote,
				  newtup);
	if (!concord_conflict_concurrent(&c))
	{
		if (!concord_conflict_local_unknown(&c))
		{
			concord_apply_row_update(ex->rri, ex->estate, &ex->epqstate, local, remote);
			return;
		}
		overtook = concord_apply_wait_for_cause(arel, c.key_text, true);
	}
	else if (concord_conflict_remote_older(&c))
	{
		older_skipped(arel, newtup, "INSERT");
		return;
	}
	concord_apply_conflicts++;
	res = resolve(ex, arel, &c, NULL);
	/* Its cause did not come: the INSERT is the newer version (causal.c). */
	if (overtook && res == CONCORD_RESOLUTION_KEEP_LOCAL && converges(c.resolver))
	{
		c.error_message = overtook;
		res = CONCORD_RESOLUTION_APPLY_REMOTE;
	}
	if (res == CONCORD_RESOLUTION_APPLY_REMOTE)
		concord_apply_row_update(ex->rri, ex->estate, &ex->epqstate, local, remote);
	concord_conflict_record(&c, res, remote);
}

/*
 * A remote INSERT or UPDATE collides through unique indexes with rivals,
 * rows of other keys (and for an INSERT, maybe the row of its own key,
 * target).  One rival: insert_exists or update_exists; more:
 * multiple_unique_conflicts.  The remote version must win against every
 * rival: then the rivals of other keys are deleted (tombstones recorded)
 * and the change applied.  Otherwise it is not applied, and under the
 * convergent resolvers the row whose new version lost is deleted too
 * (an UPDATE's target): every node then keeps the winner and drops the
 * loser's row, whichever version it met first.  The history row shows
 * the first rival as the local row.
 */
static void
unique_conflict(ApplyExec *ex, ApplyRel *arel, bool is_insert,
				TupleTableSlot *target, List *others, TupleTableSlot *remote,
				ConcordTuple *newtup)
{
	List	   *rivals = (is_insert && target) ? lcons(target, others) : others;
	ConcordConflictType type;
	ConcordConflict c;
	ConcordResolution res;
	ListCell   *lc;

	type = list_length(rivals) > 1 ? CONCORD_CONFLICT_MULTIPLE_UNIQUE_CONFLICTS :
		is_insert ? CONCORD_CONFLICT_INSERT_EXISTS : CONCORD_CONFLICT_UPDATE_EXISTS;
	conflict_init(&c, type, arel, ex, linitial(rivals), remote, newtup);
	c.target = target;
	concord_apply_conflicts++;
	res = resolve(ex, arel, &c, NULL);
	/* The timestamp and priority resolvers weigh every rival. */
	for_each_from(lc, rivals, 1)
	{
		ConcordConflict other;

		if (res != CONCORD_RESOLUTION_APPLY_REMOTE || c.resolver == CONCORD_RESOLVER_APPLY_REMOTE)
			break;
		conflict_init(&other, type, arel, ex, lfirst(lc), remote, NULL);
		if (concord_conflict_resolve(&other) != CONCORD_RESOLUTION_APPLY_REMOTE)
			res = CONCORD_RESOLUTION_KEEP_LOCAL;
	}
	if (res == CONCORD_RESOLUTION_APPLY_REMOTE)
	{
		foreach(lc, others)
		{
			concord_apply_row_delete(ex->rri, ex->estate, &ex->epqstate, lfirst(lc));
			concord_tombstone_record(ex->rel, lfirst(lc));
			concord_apply_side_writes = true;
		}
		if (target)
			concord_apply_row_update(ex->rri, ex->estate, &ex->epqstate, target, remote);
		else
			concord_apply_row_insert(ex->rri, ex->estate, remote);
	}
	else if (res == CONCORD_RESOLUTION_KEEP_LOCAL && !is_insert &&
			 converges(c.resolver))
	{
		concord_apply_row_delete(ex->rri, ex->estate, &ex->epqstate, target);
		concord_tombstone_record(ex->rel, target);
		concord_apply_side_writes = true;
	}
	concord_conflict_record(&c, res, remote);
}

/*
 * A remote INSERT was just written (no row had its key).  If a tombstone
 * says the key was deleted here and the remote writer had not seen the
 * delete, the two were concurrent: insert_deleted, and the resolver weighs
 * them; if the delete wins, the row goes again.  Looking after the insert,
 * with a fresh snapshot, also catches a delete that another apply worker
 * committed while the insert waited for it (the unique check waits for a
 * transaction that deleted the key).
 */
static void
insert_deleted(ApplyExec *ex, ApplyRel *arel, TupleTableSlot *inserted,
			   ConcordTuple *newtup)
{
	ConcordConflict c;
	ConcordResolution res;
	TransactionId deleter;

	if (!concord_apply_has_key_index(ex->rel) ||
		!concord_tombstone_possible(arel->localid, &arel->had_tombstones) ||
		!concord_tombstone_find(ex->rel, inserted, &deleter))
		return;
	conflict_init(&c, CONCORD_CONFLICT_INSERT_DELETED, arel, ex, NULL, inserted,
				  newtup);
	c.target = inserted;		/* a handler's row replaces it */
	concord_conflict_set_deleted(&c, deleter);
	if (!concord_conflict_concurrent(&c))
		return;
	if (concord_conflict_remote_older(&c))
	{
		/* The delete followed the INSERT: the row goes again, silently. */
		older_skipped(arel, newtup, "INSERT");
		CommandCounterIncrement();
		concord_apply_row_delete(ex->rri, ex->estate, &ex->epqstate, inserted);
		return;
	}
	concord_apply_conflicts++;
	CommandCounterIncrement();	/* the inserted row, visible to what follows */
	res = resolve(ex, arel, &c, NULL);
	if (res == CONCORD_RESOLUTION_KEEP_LOCAL || res == CONCORD_RESOLUTION_SKIP)
		concord_apply_row_delete(ex->rri, ex->estate, &ex->epqstate, inserted);
	concord_conflict_record(&c, res, inserted);
}

void
concord_apply_insert(ApplyRel *arel, ConcordTuple *newtup)
{
	ApplyExec  *ex;
	TupleTableSlot *slot;
	TupleTableSlot *local;

	concord_apply_lock_key(arel, newtup);

	/*
	 * An UPDATE that moved a row into the set's row filter arrives as an
	 * INSERT, and lacks the out-of-line values it left unchanged: they are
	 * read from the provider (unsent.c).  A row gone there meanwhile was
	 * deleted or moved by a later change there, which comes here too.
	 */
	if (!concord_apply_tuple_complete(newtup))
	{
		char	   *why;

		if (concord_apply_fetch_unsent(arel, newtup, newtup, &why) != CONCORD_UNSENT_READ)
		{
			ereport(WARNING,
					(errmsg("subscription \"%s\": a remote INSERT into %s (%s) is not applied: %s",
							concord_remote_txn->sub_name, arel->qualname,
							concord_apply_key_text(arel, newtup), why)));
			return;
		}
	}
	concord_apply_change_written = false;
	ex = concord_apply_exec_begin(arel, ACL_INSERT);
	slot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel), &TTSOpsVirtual);
	local = table_slot_create(ex->rel, &ex->estate->es_tupleTable);
	concord_apply_fill_slot(ex, arel, newtup, slot, NULL, FILL_ROW);
	if (concord_apply_careful)
	{
		bool		found = concord_apply_has_key_index(ex->rel) && concord_apply_find_local(ex, slot, local);
		List	   *others = concord_apply_find_collisions(ex->rri, ex->estate, slot,
													  found ? local : NULL, false);

		if (others != NIL)
			unique_conflict(ex, arel, true, found ? local : NULL, others, slot, newtup);
		else if (found)
			insert_exists(ex, arel, local, slot, newtup);
		else
		{
			concord_apply_row_insert(ex->rri, ex->estate, slot);
			insert_deleted(ex, arel, slot, newtup);
		}
	}
	else if (concord_apply_batch_possible(ex, arel))
		concord_apply_batch_add(ex, slot);
	else
	{
		concord_apply_exec_flush(ex);
		concord_apply_row_insert(ex->rri, ex->estate, slot);
		insert_deleted(ex, arel, slot, newtup);
	}
	if (!concord_apply_change_written)
		concord_apply_forward(arel, ex->rel, CONCORD_MSG_INSERT, CONCORD_OLD_NONE,
							  NULL, slot, NULL, false);
	concord_apply_exec_end(ex);
}

/*
 * A remote UPDATE or DELETE found its row.  If another origin wrote that
 * version concurrently (the remote writer had not seen it), it is a
 * conflict for the resolver; true if the remote change is to be applied.
 * The common case, a version written by the same origin or already seen
 * by the remote writer, costs one commit timestamp lookup.
 */
static bool
origin_differs(ApplyExec *ex, ApplyRel *arel, ConcordConflictType type,
			   TupleTableSlot *local, TupleTableSlot *remote,
			   ConcordTuple *remote_tuple, RemoteUpdate *upd)
{
	ConcordConflict c;
	ConcordResolution res;

	conflict_init(&c, type, arel, ex, local, remote, NULL);
	if (!concord_conflict_concurrent(&c))
		return true;
	if (concord_conflict_remote_older(&c))
	{
		older_skipped(arel, remote_tuple, type == CONCORD_CONFLICT_UPDATE_ORIGIN_DIFFERS ?
					  "UPDATE" : "DELETE");
		return false;
	}
	c.key_text = concord_apply_key_text(arel, remote_tuple);
	concord_apply_conflicts++;
	res = resolve(ex, arel, &c, upd);
	concord_conflict_record(&c, res,
							type == CONCORD_CONFLICT_UPDATE_ORIGIN_DIFFERS &&
							!upd->deleted ? remote : NULL);
	return res == CONCORD_RESOLUTION_APPLY_REMOTE && !(upd && upd->deleted);
}

/*
 * Looks the row up, and a second time before calling it missing: a row
 * being updated concurrently can escape one dirty-snapshot index lookup.
 */
static bool
find_local_twice(ApplyExec *ex, TupleTableSlot *search, TupleTableSlot *local)
{
	return concord_apply_find_local(ex, search, local) || concord_apply_find_local(ex, search, local);
}

/*
 * A remote UPDATE found no row.  If a tombstone says the row was deleted
 * here, it is update_deleted, and the resolver weighs the delete against
 * the update (the row comes back if the update wins).  Otherwise it is
 * update_missing: apply_remote inserts the new version; every other
 * resolver leaves the row absent.  The row inserted is the update's whole
 * row: the values it left unchanged come from the old row or the provider
 * (resolve()).
 */
static void
update_missing(ApplyExec *ex, ApplyRel *arel, RemoteUpdate *upd,
			   TupleTableSlot *search, TupleTableSlot *newslot)
{
	ConcordTuple *newtup = upd->newtup;
	ConcordConflict c;
	ConcordResolution res;
	TransactionId deleter;
	char	   *overtook = NULL;

	concord_apply_fill_slot(ex, arel, newtup, newslot, NULL, FILL_SEEN);
	conflict_init(&c, CONCORD_CONFLICT_UPDATE_MISSING, arel, ex, NULL, newslot,
				  newtup);
	/*
	 * Deleted here (under the key the UPDATE looked for, the old one if it
	 * changed the key): the delete's version competes with the update.
	 */
	if (concord_tombstone_find(ex->rel, search, &deleter))
	{
		c.type = CONCORD_CONFLICT_UPDATE_DELETED;
		c.resolver = arel->resolver[CONCORD_CONFLICT_UPDATE_DELETED];
		c.handler = arel->handler[CONCORD_CONFLICT_UPDATE_DELETED];
		concord_conflict_set_deleted(&c, deleter);

		/*
		 * Its writer had seen the delete: the row was inserted again, and
		 * that INSERT has not come yet (causal.c).
		 */
		if (!concord_conflict_concurrent(&c))
			overtook = concord_apply_wait_for_cause(arel, c.key_text, false);
		else if (concord_conflict_remote_older(&c))
		{
			/* The delete followed the UPDATE. */
			older_skipped(arel, newtup, "UPDATE");
			return;
		}
	}
	else
		overtook = concord_apply_wait_for_cause(arel, c.key_text, false);
	concord_apply_conflicts++;
	res = resolve(ex, arel, &c, upd);
	/* Its cause did not come: the UPDATE is the newer version (causal.c). */
	if (overtook && res == CONCORD_RESOLUTION_KEEP_LOCAL && converges(c.resolver))
	{
		c.error_message = overtook;
		c.unsent_columns = NIL;
		upd->lost = false;
		res = complete_remote(ex, arel, &c, upd) == CONCORD_UNSENT_READ ?
			CONCORD_RESOLUTION_APPLY_REMOTE : CONCORD_RESOLUTION_SKIP;
		if (!concord_apply_tuple_complete(newtup))
			c.unsent_columns = concord_apply_unsent_names(arel, newtup);
	}
	if (res == CONCORD_RESOLUTION_APPLY_REMOTE)
		concord_apply_row_insert(ex->rri, ex->estate, newslot);
	concord_conflict_record(&c, res, newslot);
}

/* An UPDATE or DELETE must find its row by a key the provider sends. */
static void
check_key(ApplyRel *arel)
{
	if (arel->key_problem)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("subscription \"%s\": %s", concord_remote_txn->sub_name,
						arel->key_problem),
				 errdetail("UPDATE and DELETE find their row by the provider's key; this table could not find it."),
				 errhint("Give the table the same primary key or replica identity on both nodes; the subscription retries the change.")));
}

/*
 * A remote UPDATE that wrote nothing here goes on to the nodes that take
 * its origin from this one (forward.c).  The out-of-line values it left
 * unchanged go on as unchanged when it lost to a version here by commit
 * time (lost_by_time()): that version reaches the next node before it and
 * wins there too, so no node further on needs them.  Otherwise they are
 * filled in here as in a conflict, from the old row under REPLICA
 * IDENTITY FULL or read from the provider (unsent.c), since a node further
 * on that needs them would read them from this node, which does not hold
 * the UPDATE's version; so they are also when the table here has REPLICA
 * IDENTITY FULL, whose row filters may read any column.  If the provider
 * no longer has the row, a later change there deleted it or moved it, and
 * goes the same way: that one settles the key further on, and this one
 * is not passed on.
 */
static void
forward_update(ApplyExec *ex, ApplyRel *arel, RemoteUpdate *upd, char oldkind,
			   TupleTableSlot *search, TupleTableSlot *newslot)
{
	ConcordTuple *newtup = upd->newtup;
	bool		complete;

	if (upd->fullold && !concord_apply_tuple_complete(newtup))
		concord_apply_unsent_from_old(newtup, upd->fullold);
	if (!concord_apply_tuple_complete(newtup) &&
		(!upd->lost || ex->rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL))
	{
		char	   *why;

		if (concord_apply_fetch_unsent(arel, upd->keytup, newtup,
									   &why) != CONCORD_UNSENT_READ)
		{
			ereport(LOG,
					(errmsg("subscription \"%s\": a remote UPDATE of %s (%s) that was not applied here is not passed on: %s",
							concord_remote_txn->sub_name, arel->qualname,
							concord_apply_key_text(arel, upd->keytup), why)));
			return;
		}
	}
	complete = concord_apply_tuple_complete(newtup);
	concord_apply_fill_slot(ex, arel, newtup, newslot, upd->base,
			  upd->base || complete ? FILL_ROW : FILL_SEEN);
	concord_apply_forward(arel, ex->rel, CONCORD_MSG_UPDATE, oldkind,
						  oldkind != CONCORD_OLD_NONE ? search : NULL,
						  newslot, newtup, upd->base != NULL || !complete);
}

void
concord_apply_update(ApplyRel *arel, char oldkind, ConcordTuple *oldtup,
					 ConcordTuple *newtup)
{
	ApplyExec  *ex;
	TupleTableSlot *search;
	TupleTableSlot *local;
	TupleTableSlot *newslot;
	ConcordTuple *keytup = oldkind == CONCORD_OLD_NONE ? newtup : oldtup;
	RemoteUpdate upd = {keytup, newtup,
		oldkind == CONCORD_OLD_FULL ? oldtup : NULL, NULL, false, false};

	check_key(arel);
	concord_apply_lock_key(arel, keytup);
	if (oldkind == CONCORD_OLD_KEY)		/* the key changed */
		concord_apply_lock_key(arel, newtup);
	concord_apply_change_written = false;
	ex = concord_apply_exec_begin(arel, ACL_UPDATE);
	search = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel), &TTSOpsVirtual);
	newslot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel), &TTSOpsVirtual);
	local = table_slot_create(ex->rel, &ex->estate->es_tupleTable);

	/* The old key tuple has NULLs outside the key; fill only to search. */
	concord_apply_fill_slot(ex, arel, keytup, search, NULL, FILL_KEY);
	if (find_local_twice(ex, search, local))
	{
		concord_apply_fill_slot(ex, arel, newtup, newslot, local, FILL_ROW);
		upd.base = local;
		if (origin_differs(ex, arel, CONCORD_CONFLICT_UPDATE_ORIGIN_DIFFERS,
						   local, newslot, newtup, &upd))
		{
			List	   *others = concord_apply_careful ?
				concord_apply_find_collisions(ex->rri, ex->estate,
											  newslot, local, true) : NIL;

			if (others != NIL)
				unique_conflict(ex, arel, false, local, others, newslot, newtup);
			else
				concord_apply_row_update(ex->rri, ex->estate, &ex->epqstate, local, newslot);
		}
	}
	else
		update_missing(ex, arel, &upd, search, newslot);
	if (!concord_apply_change_written)
		forward_update(ex, arel, &upd, oldkind, search, newslot);
	concord_apply_exec_end(ex);
}

/*
 * A remote DELETE found no row: whatever the resolver, the row stays
 * absent.  The remote delete is a version all the same: it becomes the
 * key's tombstone when there is none, or when it wins over the one there
 * (or follows it), so that a change concurrent with either delete meets
 * the version the resolver prefers on every node.
 */
static void
delete_missing(ApplyExec *ex, ApplyRel *arel, TupleTableSlot *search,
			   ConcordTuple *oldtup)
{
	ConcordConflict c;
	ConcordResolution res;
	TransactionId deleter;

	conflict_init(&c, CONCORD_CONFLICT_DELETE_MISSING, arel, ex, NULL, search,
				  oldtup);
	if (concord_apply_has_key_index(ex->rel) && concord_tombstone_find(ex->rel, search, &deleter))
		concord_conflict_set_deleted(&c, deleter);
	res = resolve(ex, arel, &c, NULL);
	if (res != CONCORD_RESOLUTION_HANDLER_ROW &&
		(!c.local_deleted || res == CONCORD_RESOLUTION_APPLY_REMOTE ||
		 !concord_conflict_concurrent(&c)))
		concord_tombstone_record(ex->rel, search);
	concord_conflict_record(&c, res, NULL);
}

void
concord_apply_delete(ApplyRel *arel, char oldkind, ConcordTuple *oldtup)
{
	ApplyExec  *ex;
	TupleTableSlot *search;
	TupleTableSlot *local;

	check_key(arel);
	concord_apply_lock_key(arel, oldtup);
	concord_apply_change_written = false;
	ex = concord_apply_exec_begin(arel, ACL_DELETE);
	search = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel), &TTSOpsVirtual);
	local = table_slot_create(ex->rel, &ex->estate->es_tupleTable);
	concord_apply_fill_slot(ex, arel, oldtup, search, NULL, FILL_SEEN);
	if (find_local_twice(ex, search, local))
	{
		if (origin_differs(ex, arel, CONCORD_CONFLICT_DELETE_ORIGIN_DIFFERS,
						   local, search, oldtup, NULL))
		{
			concord_apply_row_delete(ex->rri, ex->estate, &ex->epqstate, local);
			concord_tombstone_record(ex->rel, local);
		}
	}
	else
		delete_missing(ex, arel, search, oldtup);
	if (!concord_apply_change_written)
		concord_apply_forward(arel, ex->rel, CONCORD_MSG_DELETE, oldkind, search,
							  NULL, NULL, false);
	concord_apply_exec_end(ex);
}
