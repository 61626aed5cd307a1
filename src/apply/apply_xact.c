/*-------------------------------------------------------------------------
 *
 * apply_xact.c
 *		The apply worker's remote transactions: BEGIN, the changes, COMMIT.
 *
 * Each remote transaction is applied as one local transaction, committed
 * under the replication origin of the node where it was first written,
 * with the origin's commit timestamp and the provider's end LSN as the
 * origin's progress (apply.c reports it as flushed once the local commit
 * is).  A transaction is applied only once its commit time plus the
 * subscription's apply_delay has passed, and once the local clock has
 * passed its commit timestamp; transactions of this node itself are
 * skipped.  A unique violation of a change applied without look-ups
 * replays the transaction with them (careful mode).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/pg_bswap.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "apply/apply.h"
#include "apply/apply_exec.h"
#include "apply/parallel.h"
#include "apply/worker.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/conflict.h"
#include "conflict/known.h"
#include "conflict/own_commits.h"
#include "conflict/seen.h"
#include "conflict/tombstone.h"
#include "conflict/tombstone_gc.h"
#include "shmem/position.h"
#include "shmem/shmem.h"

#define CAREFUL_MS				60000

static ConcordRemoteTxn RemoteTxn;


/* ---------------------------------------------------------------------
 * Transactions
 * ---------------------------------------------------------------------
 */

/*
 * Before apply waits to apply the transaction it received: the status
 * shows it as received, not applied, and its commit time stands for the
 * lag while nothing was applied yet.
 */
static void
publish_held(void)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared->held_commit_ts = W.begin.commit_time;
	LWLockRelease(ConcordShmem->lock);
	concord_apply_publish_progress(false, false);
}

/* Waits until commit_time + apply_delay, answering the provider meanwhile. */
static void
wait_apply_delay(TimestampTz commit_time)
{
	int64		delay_us = W.sub->apply_delay.time +
		(int64) W.sub->apply_delay.day * USECS_PER_DAY +
		(int64) W.sub->apply_delay.month * DAYS_PER_MONTH * USECS_PER_DAY;
	TimestampTz until = commit_time + delay_us;

	if (delay_us > 0 && GetCurrentTimestamp() < until)
		publish_held();
	while (delay_us > 0 && GetCurrentTimestamp() < until)
	{
		long		ms = Min(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until),
							 FEEDBACK_INTERVAL_MS);

		/* The transactions before this one are not held up by its delay. */
		if (W.sync_report)
			concord_apply_report_sync();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* Nothing of the transaction is applied yet: stopping is safe. */
		concord_apply_stop_if_disabled();
		concord_apply_send_feedback(false, false);
	}
}

/*
 * Timestamps of one origin must not run backwards here: a remote commit
 * stamped ahead of the local clock is applied only once the local clock
 * has passed it, so every later local write is stamped later.  Beyond
 * concord.max_clock_skew the wait is also reported in last_error.
 */
static void
wait_for_clock(TimestampTz commit_time)
{
	bool		reported = false;
	TimestampTz now = GetCurrentTimestamp();

	if (commit_time <= now)
		return;
	/* Shown in pg_stat_activity.query while it lasts. */
	pgstat_report_activity(STATE_RUNNING,
						   "waiting for the local clock to pass a remote commit timestamp");
	publish_held();
	for (;;)
	{
		long		ahead_ms;

		if (commit_time <= now)
		{
			pgstat_report_activity(STATE_IDLE, NULL);
			return;
		}
		if (W.sync_report)
			concord_apply_report_sync();
		ahead_ms = TimestampDifferenceMilliseconds(now, commit_time);
		if (ahead_ms > concord_max_clock_skew && !reported)
		{
			char	   *msg = psprintf("the commit timestamp of a transaction from node \"%s\" is %ld ms ahead of the local clock, more than concord.max_clock_skew (%d ms); waiting for the clock (subscription \"%s\")",
									   W.begin.origin_name, ahead_ms,
									   concord_max_clock_skew, W.sub->name);

			ereport(WARNING, (errmsg("%s", msg)));
			LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
			W.shared->has_error = true;
			strlcpy(W.shared->last_error, msg, CONCORD_ERROR_LEN);
			W.shared->last_error_at = now;
			W.shared->error_lsn = W.begin.commit_lsn;
			LWLockRelease(ConcordShmem->lock);
			reported = true;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(Max(ahead_ms, 1), FEEDBACK_INTERVAL_MS), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		concord_apply_stop_if_disabled();
		concord_apply_send_feedback(false, false);
		now = GetCurrentTimestamp();
	}
}

/*
 * Whether the subscription receives transactions of origin_node: the
 * provider's own, and those its forward_origins name ({all}: any, up to
 * CONCORD_MAX_FORWARDED_ORIGINS).  A provider filters them itself; this
 * is against one that does not (a compromised peer): each origin received
 * becomes a replication origin here, and those are few (they share
 * max_replication_slots' states with every database of the server): a
 * forwarded origin never takes the last CONCORD_ORIGIN_STATES_KEPT_FREE.
 */
static void
check_origin_received(const char *origin_node)
{
	bool		listed = false;
	ListCell   *lc;

	if (W.provider_node && strcmp(origin_node, W.provider_node) == 0)
		return;
	foreach(lc, W.sub->forward_origins)
		if (strcmp(lfirst(lc), "all") == 0 || strcmp(lfirst(lc), origin_node) == 0)
			listed = true;
	if (!listed)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the provider sent a transaction of origin \"%s\", which subscription \"%s\" does not receive",
						origin_node, W.sub->name),
				 errdetail("The subscription receives the provider's own changes and those of the origins its forward_origins name.")));
	if (!concord_origin_exists(W.sub->id, origin_node) &&
		concord_origin_count(W.sub->id) >= CONCORD_MAX_FORWARDED_ORIGINS)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("the provider sent transactions of more than %d origins to subscription \"%s\"",
						CONCORD_MAX_FORWARDED_ORIGINS, W.sub->name),
				 errdetail("The origin \"%s\" would be one more.", origin_node)));
	if (!concord_origin_exists(W.sub->id, origin_node))
	{
		int			used = concord_origin_states_used();

		if (max_replication_slots - used <= CONCORD_ORIGIN_STATES_KEPT_FREE)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("no room for the replication origin of node \"%s\", forwarded to subscription \"%s\"",
							origin_node, W.sub->name),
					 errdetail("%d of the server's %d replication origin states (max_replication_slots) are taken, and forwarded origins leave %d free for the providers' own.",
							   used, max_replication_slots, CONCORD_ORIGIN_STATES_KEPT_FREE),
					 errhint("Raise max_replication_slots (it needs a restart), or name in forward_origins only the nodes this subscription is to receive.")));
	}
}

/* Binds the session to the origin of the transaction's origin node. */
static void
use_origin(const char *origin_node)
{
	RepOriginId origin;

	if (W.session_origin != InvalidRepOriginId &&
		strcmp(W.session_origin_node, origin_node) == 0)
		return;
	/* The catalog writes below are no transaction of the previous origin. */
	replorigin_session_origin = InvalidRepOriginId;
	StartTransactionCommand();
	check_origin_received(origin_node);
	origin = concord_origin_ensure(W.sub->id, origin_node);
	CommitTransactionCommand();
	/* A worker of several binds it only for each commit, in its turn. */
	if (W.session_origin != InvalidRepOriginId && !concord_pworker_active())
		replorigin_session_reset();
	if (!concord_pworker_active())
		replorigin_session_setup(origin);
	/* Tags this session's WAL, so decoding knows where it came from. */
	replorigin_session_origin = origin;
	W.session_origin = origin;
	strlcpy(W.session_origin_node, origin_node, NAMEDATALEN);
}

/* The transaction backend pid is in now; invalid if none (or no pid). */
static VirtualTransactionId
current_vxid(pid_t pid)
{
	PGPROC	   *proc = BackendPidGetProc(pid);
	VirtualTransactionId vxid = {InvalidBackendId, InvalidLocalTransactionId};

	if (proc != NULL)
		GET_VXID_FROM_PGPROC(vxid, *proc);
	return vxid;
}

/*
 * Whether this remote transaction locks its keys: true if another
 * subscription of this database exists, whose worker may apply changes of
 * the same rows at the same time (key_lock.c).  The entries are looked at
 * again only when one was taken or freed.  A worker's transaction that
 * began before another subscription's entry was taken locks no key, so
 * the worker that first sees the other waits for the transactions of the
 * others that run without key locks, as each entry says (review #16).
 * Each worker says so and reads the others' under the exclusive lock: of
 * two that look at once, the second sees that the first locks its keys.
 * Called in the transaction that applies the remote one.
 */
static bool
key_locks_needed(void)
{
	static bool others = false;
	static uint64 known_generation = PG_UINT64_MAX;
	uint64		generation;
	VirtualTransactionId *unkeyed;
	int			nunkeyed = 0;

	/* after StartTransactionCommand(): a waiter sees this transaction */
	pg_memory_barrier();
	generation = pg_atomic_read_u64(&ConcordShmem->subs_generation);
	if (generation == known_generation)
		return others;
	unkeyed = palloc(sizeof(VirtualTransactionId) * ConcordShmem->max_entries *
					 (1 + CONCORD_MAX_APPLY_WORKERS));
	others = false;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordSubState *st = &ConcordShmem->subs[i];

		if (st->dboid != MyDatabaseId || st == W.shared)
			continue;
		others = true;
		/* its apply worker, or the workers of its leader, each its own */
		for (int w = -1; w < CONCORD_MAX_APPLY_WORKERS; w++)
		{
			pid_t		pid = w < 0 ? st->apply_pid : st->apply_worker_pids[w];

			if (pid <= 0 || !(w < 0 ? st->apply_unkeyed : st->apply_worker_unkeyed[w]))
				continue;
			unkeyed[nunkeyed] = current_vxid(pid);
			if (VirtualTransactionIdIsValid(unkeyed[nunkeyed]))
				nunkeyed++;
		}
	}
	if (concord_pworker_active())
		W.shared->apply_worker_unkeyed[concord_pworker_index()] = !others;
	else
		W.shared->apply_unkeyed = !others;
	LWLockRelease(ConcordShmem->lock);
	for (int i = 0; others && i < nunkeyed; i++)
		(void) VirtualXactLock(unkeyed[i], true);
	pfree(unkeyed);
	known_generation = generation;
	return others;
}

/*
 * A forwarded transaction's origin node and its priority, recorded the
 * first time (and when the priority changes) in concord.node
 * (concord_node_learn()), in a short transaction of its own, once
 * use_origin() has checked that the subscription takes that origin: the
 * far nodes of a ring or star are weighed by replica_priority alike
 * everywhere.  The origins known to be recorded are cached until
 * concord.node is invalidated (drop_node, alter_node).
 */
typedef struct KnownOrigin
{
	char		name[NAMEDATALEN];
	int32		priority;
} KnownOrigin;

static List *KnownOrigins = NIL;
static bool KnownOriginsStale = false;
static Oid	NodeCatalogOid = InvalidOid;

static void
known_origins_invalidate(Datum arg pg_attribute_unused(), Oid relid)
{
	if (relid == InvalidOid || relid == NodeCatalogOid)
		KnownOriginsStale = true;
}

static void
learn_origin(const char *origin, int32 priority)
{
	ListCell   *lc;
	KnownOrigin *known;
	MemoryContext oldcxt;
	RepOriginId session_origin = replorigin_session_origin;

	if (W.provider_node && strcmp(origin, W.provider_node) == 0)
		return;
	if (KnownOriginsStale)
	{
		list_free_deep(KnownOrigins);
		KnownOrigins = NIL;
		KnownOriginsStale = false;
	}
	foreach(lc, KnownOrigins)
	{
		known = lfirst(lc);
		if (strcmp(known->name, origin) == 0 && known->priority == priority)
			return;
	}
	/* Earlier transactions are weighed with the priority they came with. */
	concord_pworker_in_turn();
	/* Not a change of that origin: its commit carries none. */
	replorigin_session_origin = InvalidRepOriginId;
	StartTransactionCommand();
	if (!OidIsValid(NodeCatalogOid))
	{
		NodeCatalogOid = concord_catalog_relid(CATALOG_NODE, false);
		CacheRegisterRelcacheCallback(known_origins_invalidate, (Datum) 0);
	}
	concord_node_learn(origin, priority);
	CommitTransactionCommand();
	replorigin_session_origin = session_origin;
	oldcxt = MemoryContextSwitchTo(concord_apply_cxt);
	known = palloc0(sizeof(KnownOrigin));
	strlcpy(known->name, origin, NAMEDATALEN);
	known->priority = priority;
	KnownOrigins = lappend(KnownOrigins, known);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * The leader of several workers (apply_leader.c), at a transaction's
 * BEGIN: the checks and the origin use_origin() makes, once for all its
 * workers (which learn the origin's priority in their turn).
 */
void
concord_apply_prepare_origin(const char *origin_node)
{
	StartTransactionCommand();
	check_origin_received(origin_node);
	(void) concord_origin_ensure(W.sub->id, origin_node);
	CommitTransactionCommand();
}

/*
 * Holds the apply fence (shmem.h) until the transaction ends, before
 * anything gives the transaction an XID: a joining node's copy takes its
 * snapshot here while no applied transaction is half committed
 * (api/mesh_api.c, concord_join_fence).
 */
static void
enter_apply_fence(void)
{
	LOCKTAG		tag;

	CONCORD_SET_FENCE_TAG(tag);
	(void) LockAcquire(&tag, RowExclusiveLock, false, false);
}

static void
handle_begin(StringInfo s)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_cxt);

	if (W.in_remote_txn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("BEGIN inside a remote transaction")));
	if (W.begin.origin_name)
		pfree(W.begin.origin_name);
	concord_read_begin(s, &W.begin);
	MemoryContextSwitchTo(oldcxt);
	/* The provider's WAL reaches at least the end of this transaction. */
	W.provider_lsn = Max(W.provider_lsn, W.begin.end_lsn);

	/* Never apply a change back onto the node it came from. */
	W.skip_txn = strcmp(W.begin.origin_name, W.local_node) == 0;
	if (!W.skip_txn)
	{
		wait_apply_delay(W.begin.commit_time);
		wait_for_clock(W.begin.commit_time);
		use_origin(W.begin.origin_name);
		learn_origin(W.begin.origin_name, W.begin.origin_priority);
		/* now() in the transaction, e.g. conflict_history.detected_at */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		enter_apply_fence();
		/* Deferred triggers fire as the table's owner too (owner.c). */
		concord_constraints_immediate();
	}
	W.in_remote_txn = true;
	W.seen = W.first_seen = NIL;
	W.gaps_checked = false;
	concord_apply_side_writes = false;
	concord_apply_replay_wanted = false;
	concord_apply_lock_keys = !W.skip_txn && key_locks_needed();
	concord_apply_key_locks_reset();
	if (concord_pworker_active())
	{
		/* Another worker's conflict makes every worker look (stay_careful). */
		LWLockAcquire(ConcordShmem->lock, LW_SHARED);
		W.careful_until = Max(W.careful_until, W.shared->careful_until);
		LWLockRelease(ConcordShmem->lock);
		concord_apply_careful = W.careful_until > GetCurrentTimestamp();
		/* Look-ups through other unique indexes see every earlier unit. */
		if (concord_apply_careful && !W.skip_txn)
			concord_pworker_in_turn();
	}
	else if (concord_apply_careful && W.last_feedback > W.careful_until)
		concord_apply_careful = false;
	RemoteTxn.sub_name = W.sub->name;
	RemoteTxn.local_node = W.local_node;
	RemoteTxn.origin_name = W.begin.origin_name;
	RemoteTxn.origin_priority = W.begin.origin_priority;
	RemoteTxn.commit_time = W.begin.commit_time;
	RemoteTxn.commit_lsn = W.begin.commit_lsn;
	RemoteTxn.seen = NIL;
	concord_remote_txn = &RemoteTxn;
}

/*
 * Records in the transaction the end LSN of its commit on its origin node,
 * for this node's output plugin to send on (CONCORD_ORIGIN_LSN_PREFIX; 0:
 * a copy, which holds no transaction of its origin's): a subscriber that
 * receives it forwarded learns what it holds of that node
 * (shmem/position.c).  Only in a transaction that has an XID (one without
 * writes no commit record, and nothing of it is sent on).
 */
void
concord_apply_log_origin_lsn(XLogRecPtr origin_lsn)
{
	uint64		lsn = pg_hton64(origin_lsn);

	if (!TransactionIdIsValid(GetTopTransactionIdIfAny()))
		return;
	(void) LogLogicalMessage(CONCORD_ORIGIN_LSN_PREFIX, (const char *) &lsn,
							 sizeof(lsn), true);
}

/*
 * Whether the remote transaction is another node's, forwarded by the
 * provider: this node learns how far it holds that node only from the
 * origin LSN it carries (shmem/position.c).
 */
static bool
forwarded_origin(void)
{
	return W.provider_node == NULL ||
		strcmp(W.begin.origin_name, W.provider_node) != 0;
}

/* Reads a COMMIT, which must close the open remote transaction. */
void
concord_apply_read_commit(StringInfo s, ConcordCommitMsg *msg)
{
	concord_read_commit(s, msg);
	if (!W.in_remote_txn || msg->commit_lsn != W.begin.commit_lsn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("COMMIT does not match the open remote transaction")));
}

static void
handle_commit(StringInfo s)
{
	ConcordCommitMsg msg;

	concord_apply_read_commit(s, &msg);
	if (!W.skip_txn)
	{
		MemoryContext oldcxt;
		LsnMapping *m;
		FullTransactionId fxid = GetTopFullTransactionIdIfAny();
		bool		has_origin_lsn = (msg.flags & CONCORD_COMMIT_ORIGIN_LSN) != 0;

		concord_apply_exec_close_all();
		/* A worker of several commits only after every earlier one. */
		if (concord_pworker_active())
			concord_pworker_take_turn(true);
		replorigin_session_origin_lsn = msg.end_lsn;
		replorigin_session_origin_timestamp = msg.commit_time;
		if (has_origin_lsn)
			concord_apply_log_origin_lsn(msg.origin_lsn);
		/* Without an XID, no commit record: nothing to forward or track. */
		W.position_tracked = FullTransactionIdIsValid(fxid) && forwarded_origin();
		if (W.position_tracked)
			concord_position_committing(W.sub->id, W.begin.origin_name,
										msg.end_lsn, msg.origin_lsn,
										has_origin_lsn,
										replorigin_session_get_progress(false));
		/* W.seen lives in the transaction: note it first (still true). */
		concord_confirm_record(W.begin.origin_name, W.seen);
		/* Not when apply wrote more than the remote changes (known.c). */
		if (!concord_apply_side_writes)
			concord_known_note(W.first_seen, W.begin.origin_name,
							   msg.commit_time, W.local_node);
		W.seen = W.first_seen = NIL;
		CommitTransactionCommand();
		concord_own_commit_note(fxid, replorigin_session_origin);
		if (W.position_tracked)
			concord_position_committed(W.sub->id, W.begin.origin_name);
		W.position_tracked = false;
		/* A forwarded initial copy is no write of its origin's. */
		if (W.begin.commit_time != CONCORD_BASELINE_TS)
			concord_seen_applied(W.begin.origin_name, W.begin.commit_time);
		if (concord_pworker_active())
			concord_pworker_committed(msg.end_lsn, XactLastCommitEnd,
									  (msg.flags & CONCORD_COMMIT_SYNC) != 0);
		else
		{
			oldcxt = MemoryContextSwitchTo(concord_apply_cxt);
			m = palloc(sizeof(LsnMapping));
			m->remote_end = msg.end_lsn;
			m->local_end = XactLastCommitEnd;
			W.lsn_map = lappend(W.lsn_map, m);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	W.in_remote_txn = false;
	W.received = Max(W.received, msg.end_lsn);
	W.caught_up = Max(W.caught_up, msg.end_lsn);
	if (concord_pworker_active())
	{
		/* A skipped one too: in its turn (the unit ends after it). */
		if (W.skip_txn)
			concord_pworker_take_turn(false);
		concord_pworker_caught_up(msg.end_lsn,
								  W.skip_txn && (msg.flags & CONCORD_COMMIT_SYNC) != 0);
	}
	/* Whether the provider's commits may wait for this node (output.c). */
	W.sync_listed = (msg.flags & CONCORD_COMMIT_SYNC) != 0;
	if (W.sync_listed)
		W.sync_report = true;
	if (concord_apply_conflicts > 0)
		concord_apply_stay_careful();
	concord_apply_publish_progress(!W.skip_txn, true);
}

/*
 * Conflict look-ups stay on for a while after the last conflict: where
 * one conflict happened, more tend to follow.
 */
void
concord_apply_stay_careful(void)
{
	W.careful_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CAREFUL_MS);
	concord_apply_careful = true;
	concord_apply_conflicts = 0;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared->careful_until = W.careful_until;
	LWLockRelease(ConcordShmem->lock);
}

/*
 * From PG_CATCH: an INSERT met an existing key while apply was not
 * looking (a unique violation).  The transaction rolled back; the next
 * worker replays it with conflict look-ups on, which turns the violation
 * into an insert_exists conflict for the resolver.  Returns false for
 * any other error.
 */
bool
concord_apply_retry_carefully(void)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ErrorData  *edata = CopyErrorData();
	bool		retry = (edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION ||
						 concord_apply_replay_wanted) &&
		W.in_remote_txn && !concord_apply_careful;

	MemoryContextSwitchTo(oldcxt);
	FreeErrorData(edata);
	if (!retry)
		return false;
	concord_apply_stay_careful();
	if (concord_apply_replay_wanted)
		ereport(LOG,
				(errmsg("concord subscription \"%s\": a table its remote INSERTs were written into together had a row deleted meanwhile, replaying its transaction with conflict detection",
						W.sub->name)));
	else
		ereport(LOG,
				(errmsg("concord subscription \"%s\": a remote change collides with a row here (unique violation), replaying its transaction with conflict detection",
						W.sub->name)));
	return true;
}

/*
 * False if the change is for a table whose copy already has it.  A change
 * to apply is first checked against the tombstones removed without its
 * writer's confirmation (tombstone_gc.c), once per transaction.
 */
static bool
change_wanted(ApplyRel *arel)
{
	if (W.skip_txn || (arel->synced && W.begin.commit_lsn < arel->sync_lsn))
		return false;
	if (!W.gaps_checked)
	{
		concord_gap_check(W.sub->name, W.begin.origin_name, W.seen);
		W.gaps_checked = true;
		/* Every change is judged by this vector or a later one (known.c). */
		W.first_seen = W.seen;
	}
	return true;
}

static void
check_in_txn(void)
{
	if (!W.in_remote_txn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("change outside a remote transaction")));
}

/*
 * A change is read whole before anything else: from protocol version 2
 * on, the next message follows it in the same CopyData, also when the
 * transaction is skipped.
 */
static void
handle_change(StringInfo s, char type)
{
	ConcordTuple oldtup;
	ConcordTuple newtup;
	char		oldkind;
	Oid			relid;
	ApplyRel   *arel;

	check_in_txn();
	relid = concord_read_change(s, type, &oldkind, &oldtup, &newtup);
	if (W.skip_txn)
		return;
	PushActiveSnapshot(GetTransactionSnapshot());
	arel = concord_apply_rel_get(relid, RowExclusiveLock);
	concord_apply_exec_flush_before(arel->localid, type == CONCORD_MSG_INSERT);
	if (change_wanted(arel))
	{
		if (type == CONCORD_MSG_INSERT)
			concord_apply_insert(arel, &newtup);
		else if (type == CONCORD_MSG_UPDATE)
			concord_apply_update(arel, oldkind, &oldtup, &newtup);
		else
			concord_apply_delete(arel, oldkind, &oldtup);
	}
	PopActiveSnapshot();
}

static void
handle_truncate(StringInfo s)
{
	ConcordTruncateMsg msg;
	List	   *arels = NIL;

	check_in_txn();
	concord_read_truncate(s, &msg);
	if (W.skip_txn)
		return;
	PushActiveSnapshot(GetTransactionSnapshot());
	for (int i = 0; i < msg.nrelids; i++)
	{
		ApplyRel   *arel = concord_apply_rel_get(msg.relids[i], AccessExclusiveLock);

		if (change_wanted(arel))
			arels = lappend(arels, arel);
	}
	/* TRUNCATE refuses a table this session holds open. */
	concord_apply_exec_close_all();
	if (arels != NIL)
		concord_apply_truncate(arels, msg.restart_seqs);
	PopActiveSnapshot();
}

/*
 * The remote writer's vector: kept for conflict decisions, and logged
 * again here so that a node that forwards this transaction ships it too.
 */
static void
handle_seen(StringInfo s)
{
	const char *payload;
	int			len;
	MemoryContext oldcxt;

	check_in_txn();
	/* The stream is in the version apply asks for (start_streaming). */
	payload = concord_read_seen_payload(s, CONCORD_PROTO_VERSION >= 2, &len);
	if (W.skip_txn)
		return;
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	{
		StringInfoData copy;

		copy.data = (char *) payload;
		copy.len = copy.maxlen = len;
		copy.cursor = 0;
		W.seen = concord_decode_seen(&copy);
	}
	MemoryContextSwitchTo(oldcxt);
	RemoteTxn.seen = W.seen;
	/* after the changes before it, in this node's WAL too */
	concord_apply_exec_flush_before(InvalidOid, false);
	(void) LogLogicalMessage(CONCORD_SEEN_PREFIX, payload, len, true);
}

/* Whether the subscription takes node's changes forwarded (forward_origins). */
static bool
takes_forwarded(const char *node)
{
	ListCell   *lc;

	foreach(lc, W.sub->forward_origins)
	{
		const char *name = lfirst(lc);

		if (strcmp(name, "all") == 0 || strcmp(name, node) == 0)
			return true;
	}
	return false;
}

/*
 * A MARK: everything node committed up to lsn has been sent before it, so
 * is applied here now.  Of the provider itself, that is where its stream
 * stands (as a keepalive says); of a node it forwards, a lower bound of
 * what this node holds of it (shmem/position.c), kept without an origin
 * (a mark must never stop apply for want of one).  Either way logged again
 * (CONCORD_MARK_PREFIX, not under any origin) for the subscribers of this
 * node that take that node's changes, if it tells more than before.
 */
static void
handle_mark(StringInfo s)
{
	char	   *node;
	XLogRecPtr	lsn;
	bool		more;
	RepOriginId session_origin = replorigin_session_origin;
	StringInfoData payload;

	concord_read_mark(s, &node, &lsn);
	if (W.in_remote_txn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("MARK inside a remote transaction")));
	if (strcmp(node, W.local_node) == 0)
		return;
	if (W.provider_node && strcmp(node, W.provider_node) == 0)
	{
		/* A keepalive may have told where the stream stands already. */
		more = lsn > W.provider_mark;
		W.provider_mark = Max(W.provider_mark, lsn);
		if (lsn > W.caught_up)
		{
			W.caught_up = lsn;
			if (concord_pworker_active())
				concord_pworker_caught_up(lsn, false);
			concord_apply_publish_progress(false, true);
		}
	}
	else if (takes_forwarded(node))
		more = concord_position_marked(W.sub->id, node, lsn);
	else
		more = false;			/* not this subscription's to know */
	if (!more)
		return;
	initStringInfo(&payload);
	concord_encode_mark(&payload, node, lsn, false);
	replorigin_session_origin = InvalidRepOriginId;
	/* Decoding reads flushed WAL: have the WAL writer flush it soon. */
	XLogSetAsyncXactLSN(LogLogicalMessage(CONCORD_MARK_PREFIX, payload.data,
										  payload.len, false));
	replorigin_session_origin = session_origin;
	pfree(payload.data);
}

void
concord_apply_dispatch(StringInfo s)
{
	char		type = pq_getmsgbyte(s);

	switch (type)
	{
		case CONCORD_MSG_BEGIN:
			handle_begin(s);
			break;
		case CONCORD_MSG_COMMIT:
			handle_commit(s);
			break;
		case CONCORD_MSG_RELATION:
			concord_apply_rel_store(s);
			break;
		case CONCORD_MSG_INSERT:
		case CONCORD_MSG_UPDATE:
		case CONCORD_MSG_DELETE:
			handle_change(s, type);
			break;
		case CONCORD_MSG_TRUNCATE:
			handle_truncate(s);
			break;
		case CONCORD_MSG_SEEN:
			handle_seen(s);
			break;
		case CONCORD_MSG_MARK:
			handle_mark(s);
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unknown concord message type %d", type)));
	}
}


/*
 * At the worker's exit: a transaction whose commit returned but whose
 * position was not recorded yet (shmem/position.c) is recorded, so that
 * the positions saved then are exact.
 */
void
concord_apply_settle_position(void)
{
	if (!W.position_tracked || W.session_origin == InvalidRepOriginId)
		return;
	if (replorigin_session_get_progress(false) == replorigin_session_origin_lsn)
		concord_position_committed(W.sub->id, W.begin.origin_name);
	W.position_tracked = false;
}
