/*-------------------------------------------------------------------------
 *
 * apply_pworker.c
 *		A worker of a subscription applied by several (parallel.h): it
 *		applies the units its leader hands it, in order with the others.
 *
 * A unit is applied by the same code as with one worker (apply_xact.c),
 * as one local transaction.  Before its first change, the worker takes
 * the unit's lock (a session lock, released once the unit is done) and
 * waits until the unit it depends on is done; before its commit, until
 * every earlier unit is done (its turn).  Only then does it bind the
 * session to the replication origin, commit, and let go of the origin:
 * the workers share each origin by taking turns, so that PostgreSQL 15
 * (one process per origin at a time) sees one process commit under it at
 * a time, and its progress only moves along the stream's order.
 *
 * Both waits wait on the lock of the unit waited for, when its worker has
 * taken it, else (for the instant between its hand-over and its worker
 * taking it) on a condition variable: a circle of waits that passes
 * through a local session's row lock is one the deadlock detector sees.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "apply/apply.h"
#include "apply/parallel.h"
#include "apply/worker.h"
#include "concord.h"
#include "conflict/own_commits.h"
#include "conflict/seen.h"
#include "shmem/position.h"
#include "shmem/shmem.h"

/* A unit's lock: advisory, in a space SQL's functions do not reach. */
#define CONCORD_UNIT_LOCK_FIELD4	0xC2
#define TURN_POLL_MS				100

static ConcordApplyCtl *Ctl = NULL;
static int	MyIndex = -1;
static uint64 UnitSeq = 0;
static bool TurnTaken = false;
static bool OriginHeld = false;
static bool UnitAlone = false;	/* a serial unit */
static bool SyncPending = false;	/* its COMMIT: report it once done */
static shm_mq_handle *Queue = NULL;

bool
concord_pworker_active(void)
{
	return Ctl != NULL;
}

static void
unit_tag(LOCKTAG *tag, uint64 seq)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, Ctl->subid, (uint32) seq,
						 CONCORD_UNIT_LOCK_FIELD4);
}

/*
 * Another worker failed: this one rolls back and leaves quietly.  Never
 * while registered on the condition variable, which lives in the DSM
 * segment: that is unmapped before the process's last clean-up.
 */
static void
leave_if_failed(void)
{
	if (pg_atomic_read_u32(&Ctl->failure) != CONCORD_PAPPLY_OK)
	{
		ConditionVariableCancelSleep();
		proc_exit(0);
	}
}

/* Which worker holds target's lock, or -1 if none does yet. */
static int
holder_of(uint64 target)
{
	for (int i = 0; i < Ctl->nworkers; i++)
		if (pg_atomic_read_u64(&Ctl->locked[i]) == target)
			return i;
	return -1;
}

/*
 * Waits until every unit up to target is done: on target's lock once its
 * worker holds it, else on the condition variable (broadcast when a
 * worker takes a unit's lock or is done with one).
 */
static void
wait_done(uint64 target)
{
	while (pg_atomic_read_u64(&Ctl->done) < target)
	{
		leave_if_failed();
		if (holder_of(target) >= 0)
		{
			LOCKTAG		tag;

			/* not registered on the CV while waiting on a lock */
			ConditionVariableCancelSleep();
			unit_tag(&tag, target);
			(void) LockAcquire(&tag, ShareLock, true, false);
			LockRelease(&tag, ShareLock, true);
			if (pg_atomic_read_u64(&Ctl->done) >= target)
				break;
			/* its worker stopped without being done: the leader stops us */
		}
		ConditionVariablePrepareToSleep(&Ctl->cv);
		if (pg_atomic_read_u64(&Ctl->done) >= target)
			break;
		leave_if_failed();
		(void) ConditionVariableTimedSleep(&Ctl->cv, TURN_POLL_MS,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

static void
start_unit(const ConcordUnitHeader *hdr)
{
	LOCKTAG		tag;

	UnitSeq = hdr->seq;
	TurnTaken = false;
	UnitAlone = (hdr->flags & CONCORD_UNIT_SERIAL) != 0;
	SyncPending = false;
	unit_tag(&tag, UnitSeq);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	pg_atomic_write_u64(&Ctl->locked[MyIndex], UnitSeq);
	ConditionVariableBroadcast(&Ctl->cv);
	wait_done(hdr->dep);
}

/*
 * From handle_commit(): waits for every earlier unit, then, for a commit,
 * binds the session to the transaction's origin.
 */
void
concord_pworker_take_turn(bool bind_origin)
{
	if (!TurnTaken)
		wait_done(UnitSeq - 1);
	TurnTaken = true;
	if (bind_origin && W.session_origin != InvalidRepOriginId)
	{
		replorigin_session_setup(W.session_origin);
		OriginHeld = true;
	}
}

/*
 * Before a decision that may read or write more than the unit's own keys
 * (a custom handler, a causal hold, conflict look-ups through other
 * unique indexes): waits until every earlier unit is done, so that the
 * decision is the one a single worker would make.  No-op elsewhere.
 */
void
concord_pworker_in_turn(void)
{
	if (Ctl == NULL || TurnTaken)
		return;
	wait_done(UnitSeq - 1);
	TurnTaken = true;
}

/* Which worker of its leader this is (0 .. nworkers - 1). */
int
concord_pworker_index(void)
{
	return MyIndex;
}

/*
 * Whether the unit runs alone: every earlier unit was done before it
 * began, and every later one waits for it.  Always with one worker.
 */
bool
concord_pworker_alone(void)
{
	return Ctl == NULL || UnitAlone;
}

/* After the commit: what it applied, for the leader's feedback. */
void
concord_pworker_committed(XLogRecPtr remote_end, XLogRecPtr local_end, bool sync)
{
	SpinLockAcquire(&Ctl->mutex);
	Ctl->commit_remote_end = Max(Ctl->commit_remote_end, remote_end);
	Ctl->commit_local_end = Max(Ctl->commit_local_end, local_end);
	Ctl->caught_up = Max(Ctl->caught_up, remote_end);
	SpinLockRelease(&Ctl->mutex);
	if (OriginHeld)
	{
		replorigin_session_reset();
		OriginHeld = false;
	}
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
	if (sync)
	{
		/* The provider waits for it: flushed now, reported once done. */
		XLogFlush(local_end);
		SyncPending = true;
	}
}

/* Every provider commit up to lsn is applied (a COMMIT, a MARK). */
void
concord_pworker_caught_up(XLogRecPtr lsn, bool sync)
{
	if (sync)
		SyncPending = true;
	SpinLockAcquire(&Ctl->mutex);
	Ctl->caught_up = Max(Ctl->caught_up, lsn);
	SpinLockRelease(&Ctl->mutex);
}

static void
finish_unit(void)
{
	LOCKTAG		tag;

	if (!TurnTaken)
		wait_done(UnitSeq - 1);
	pg_atomic_write_u64(&Ctl->done, UnitSeq);
	/* A COMMIT the provider may wait for: the leader reports it now. */
	if (SyncPending)
	{
		pg_atomic_write_u32(&Ctl->sync_pending, 1);
		SetLatch(Ctl->leader_latch);
		SyncPending = false;
	}
	unit_tag(&tag, UnitSeq);
	LockRelease(&tag, ExclusiveLock, true);
	TurnTaken = false;
	ConditionVariableBroadcast(&Ctl->cv);
	pg_memory_barrier();
	if (pg_atomic_read_u32(&Ctl->leader_waiting) != 0)
		SetLatch(Ctl->leader_latch);
}

static void
apply_unit(char *data, Size len)
{
	ConcordUnitHeader hdr;
	StringInfoData s;

	if (len < sizeof(hdr))
		elog(ERROR, "short unit of %zu bytes from the apply leader", len);
	memcpy(&hdr, data, sizeof(hdr));
	if (!(hdr.flags & CONCORD_UNIT_CONT))
		start_unit(&hdr);
	s.data = data + sizeof(hdr);
	s.len = s.maxlen = len - sizeof(hdr);
	s.cursor = 0;
	while (s.cursor < s.len)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_message_cxt);

		concord_apply_dispatch(&s);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(concord_apply_message_cxt);
	}
	if (!(hdr.flags & CONCORD_UNIT_MORE))
		finish_unit();
}

static void
pworker_detach(int code, Datum arg pg_attribute_unused())
{
	/* The CV is in the segment, which is unmapped after this callback. */
	ConditionVariableCancelSleep();
	/* Left quietly (its subscription disabled or gone): no failure. */
	if (Ctl && code == 0)
	{
		uint32		ok = CONCORD_PAPPLY_OK;

		(void) pg_atomic_compare_exchange_u32(&Ctl->failure, &ok,
											  CONCORD_PAPPLY_STOPPED);
	}
	LWLockReleaseAll();
	if (OriginHeld)
	{
		concord_apply_settle_position();
		replorigin_session_reset();
		OriginHeld = false;
	}
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	if (W.shared && W.shared->apply_worker_pids[MyIndex] == MyProcPid)
	{
		W.shared->apply_worker_pids[MyIndex] = 0;
		W.shared->apply_worker_unkeyed[MyIndex] = false;
	}
	LWLockRelease(ConcordShmem->lock);
	if (Ctl)
	{
		ConditionVariableBroadcast(&Ctl->cv);
		SetLatch(Ctl->leader_latch);
	}
}

static void
pworker_error_context(void *arg pg_attribute_unused())
{
	if (W.sub == NULL)
		return;
	if (W.in_remote_txn)
		errcontext("subscription \"%s\", apply worker %d, remote transaction %u from node \"%s\" committed at %X/%X",
				   W.sub->name, MyIndex + 1, W.begin.xid, W.begin.origin_name,
				   LSN_FORMAT_ARGS(W.begin.commit_lsn));
	else
		errcontext("subscription \"%s\", apply worker %d", W.sub->name, MyIndex + 1);
}

static void
attach(Oid dboid, Oid subid, dsm_segment *seg)
{
	shm_mq	   *mq;

	Ctl = dsm_segment_address(seg);
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared = concord_sub_state(dboid, subid, false);
	if (W.shared == NULL || Ctl->subid != subid)
	{
		LWLockRelease(ConcordShmem->lock);
		proc_exit(0);
	}
	W.shared->apply_worker_pids[MyIndex] = MyProcPid;
	W.careful_until = W.shared->careful_until;
	LWLockRelease(ConcordShmem->lock);
	concord_apply_careful = W.careful_until > GetCurrentTimestamp();
	before_shmem_exit(pworker_detach, (Datum) 0);
	mq = (shm_mq *) ((char *) Ctl + MAXALIGN(sizeof(ConcordApplyCtl)) +
					 (Size) MyIndex * CONCORD_APPLY_QUEUE_SIZE);
	shm_mq_set_receiver(mq, MyProc);
	Queue = shm_mq_attach(mq, seg, NULL);
}

static void
pworker_loop(void)
{
	for (;;)
	{
		Size		len;
		void	   *data;
		shm_mq_result res;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			concord_apply_rel_forget_all();
		}
		res = shm_mq_receive(Queue, &len, &data, false);
		if (res != SHM_MQ_SUCCESS)
			proc_exit(0);		/* the leader is gone */
		apply_unit(data, len);
	}
}

/*
 * From PG_CATCH: a deadlock that waits between workers made possible (a
 * later unit holds its rows while it waits for its turn) is no failure of
 * the subscription's: it starts again at once, each unit in its turn for
 * a while (careful mode), as one worker would apply them.
 */
static bool
deadlock_restart(void)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ErrorData  *edata = CopyErrorData();
	bool		deadlock = edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED;

	MemoryContextSwitchTo(oldcxt);
	FreeErrorData(edata);
	if (!deadlock || concord_apply_careful)
		return false;
	concord_apply_stay_careful();
	ereport(LOG,
			(errmsg("concord subscription \"%s\": apply worker %d met a deadlock, starting again with each transaction in its turn",
					W.sub->name, MyIndex + 1)));
	return true;
}

void
concord_apply_pworker_main(Datum main_arg)
{
	Oid			subid = DatumGetObjectId(main_arg);
	Oid			dboid;
	dsm_handle	handle;
	int32		index;
	dsm_segment *seg;
	ErrorContextCallback errcb;
	bool		needs_sync;

	memcpy(&handle, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(dsm_handle));
	memcpy(&index, MyBgworkerEntry->bgw_extra + sizeof(Oid) + sizeof(dsm_handle),
		   sizeof(int32));
	dboid = concord_worker_connect();
	if (index < 0 || index >= CONCORD_MAX_APPLY_WORKERS)
		proc_exit(1);
	MyIndex = index;
	concord_apply_cxt = AllocSetContextCreate(TopMemoryContext, "concord apply",
											  ALLOCSET_DEFAULT_SIZES);
	concord_apply_message_cxt = AllocSetContextCreate(concord_apply_cxt,
													  "concord apply message",
													  ALLOCSET_DEFAULT_SIZES);
	concord_is_worker = true;
	seg = dsm_attach(handle);
	if (seg == NULL)
		proc_exit(0);			/* the leader is gone already */
	attach(dboid, subid, seg);
	concord_apply_set_gucs();

	errcb.callback = pworker_error_context;
	errcb.arg = NULL;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	PG_TRY();
	{
		(void) concord_apply_load_subscription(subid, &needs_sync);
		pworker_loop();
	}
	PG_CATCH();
	{
		/* Failed because another did: that one's error is the one. */
		if (pg_atomic_read_u32(&Ctl->failure) != CONCORD_PAPPLY_OK)
			PG_RE_THROW();
		if (concord_apply_retry_carefully() || deadlock_restart())
		{
			pg_atomic_write_u32(&Ctl->failure, CONCORD_PAPPLY_CAREFUL);
			SetLatch(Ctl->leader_latch);
			proc_exit(0);
		}
		LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
		W.shared->error_lsn = W.in_remote_txn ? W.begin.commit_lsn : InvalidXLogRecPtr;
		LWLockRelease(ConcordShmem->lock);
		concord_record_current_error(W.shared);
		pg_atomic_write_u32(&Ctl->failure, CONCORD_PAPPLY_FAILED);
		ConditionVariableBroadcast(&Ctl->cv);
		SetLatch(Ctl->leader_latch);
		PG_RE_THROW();
	}
	PG_END_TRY();
}
