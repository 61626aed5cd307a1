/*-------------------------------------------------------------------------
 *
 * wait_api.c
 *		The wait functions: until a subscription's copy is done, until it
 *		has applied a provider position.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "api/api.h"
#include "catalog/tables.h"
#include "concord.h"
#include "shmem/position.h"
#include "shmem/shmem.h"

#define WAIT_POLL_MS	100

PG_FUNCTION_INFO_V1(concord_wait_for_subscription_sync_complete);
PG_FUNCTION_INFO_V1(concord_wait_for_apply);

/* Sleeps one poll interval; false, without sleeping, once the deadline (0: none) passed. */
bool
concord_wait_tick(TimestampTz deadline)
{
	if (deadline != 0 && GetCurrentTimestamp() >= deadline)
		return false;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 WAIT_POLL_MS, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

TimestampTz
concord_deadline_from(FunctionCallInfo fcinfo, int argno)
{
	Interval   *iv;

	if (PG_ARGISNULL(argno))
		return 0;
	iv = PG_GETARG_INTERVAL_P(argno);
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(GetCurrentTimestamp()),
												   IntervalPGetDatum(iv)));
}

static bool
sync_complete(const char *name)
{
	ConcordSubscription *sub = concord_sub_get_existing(name);
	ConcordSubState *st;
	bool		copying = false;
	ListCell   *lc;

	/* Made by join_mesh: waiting for the copy from the peer. */
	if (!sub->sync_done || OidIsValid(sub->join_copy_via))
		return false;
	foreach(lc, concord_sub_table_get(sub->id))
		if (((ConcordSubTable *) lfirst(lc))->pending)
			return false;
	/*
	 * The copy is committed; its worker may not have said so yet (the
	 * status still shows syncing: status_name()).
	 */
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	st = concord_sub_state(MyDatabaseId, sub->id, false);
	if (st)
		copying = st->phase == CONCORD_PHASE_SYNCING || st->sync_pid > 0;
	LWLockRelease(ConcordShmem->lock);
	return !copying;
}

Datum
concord_wait_for_subscription_sync_complete(PG_FUNCTION_ARGS)
{
	char	   *name = concord_required_name(fcinfo, 0, "subscription_name");
	TimestampTz deadline = concord_deadline_from(fcinfo, 1);

	while (!sync_complete(name))
		if (!concord_wait_tick(deadline))
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("timed out waiting for the copy of subscription \"%s\"", name),
					 errhint("Check last_error in concord.subscription_status.")));
	PG_RETURN_VOID();
}

/*
 * The subscription's applied position, if it is streaming; below target,
 * asks apply to wake the waiters once it reaches target.
 */
static XLogRecPtr
applied_position(ConcordSubState **st, Oid subid, XLogRecPtr target)
{
	XLogRecPtr	done = InvalidXLogRecPtr;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	*st = concord_sub_state(MyDatabaseId, subid, false);
	if (*st && (*st)->phase == CONCORD_PHASE_REPLICATING)
		done = (*st)->caught_up_lsn;
	if (*st && done < target &&
		((*st)->wake_lsn == InvalidXLogRecPtr || target < (*st)->wake_lsn))
		(*st)->wake_lsn = target;
	LWLockRelease(ConcordShmem->lock);
	return done;
}

/*
 * Waits until the subscription has applied the provider's changes up to
 * target, or the deadline (0: none) passed; false then.  Waits on the
 * subscription's condition variable, which apply broadcasts once its
 * position reaches the lowest target a waiter registered; the timed sleep
 * also covers a worker that is not there yet.
 */
bool
concord_wait_applied(const ConcordSubscription *sub, XLogRecPtr target,
					 TimestampTz deadline)
{
	bool		reached = false;

	for (;;)
	{
		ConcordSubState *st;

		if (applied_position(&st, sub->id, target) >= target)
		{
			reached = true;
			break;
		}
		if (deadline != 0 && GetCurrentTimestamp() >= deadline)
			break;
		if (st == NULL)
		{
			/* No worker state: it may have been dropped meanwhile. */
			if (concord_subscription_get_by_id(sub->id) == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("subscription \"%s\" was dropped while waiting for it", sub->name)));
			(void) concord_wait_tick(deadline);
			continue;
		}
		(void) ConditionVariableTimedSleep(&st->progress_cv, WAIT_POLL_MS,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return reached;
}

Datum
concord_wait_for_apply(PG_FUNCTION_ARGS)
{
	char	   *name = concord_required_name(fcinfo, 0, "subscription_name");
	/* pg_current_wal_insert_lsn() just past an empty page's header */
	XLogRecPtr	target = concord_wal_position_trimmed(PG_GETARG_LSN(1));
	TimestampTz deadline = concord_deadline_from(fcinfo, 2);

	PG_RETURN_BOOL(concord_wait_applied(concord_sub_get_existing(name), target, deadline));
}
