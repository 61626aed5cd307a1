/*-------------------------------------------------------------------------
 *
 * apply.c
 *		The apply worker: one per enabled subscription.
 *
 * It streams the provider's changes from the subscription's slot and
 * applies each remote transaction as one local transaction, committed
 * under the replication origin of the node where the transaction was
 * first written (origin.c), with the provider's end-of-commit LSN as the
 * origin's progress.  The position to restart from is therefore exactly
 * as durable as the data: a crash at any instant loses nothing and
 * applies nothing twice.  Apply commits asynchronously (synchronous_commit
 * off); the provider is only told a position is flushed once the local
 * commit that applied it is flushed (lsn_map), so its slot never moves
 * past what a crash here could lose.
 *
 * Before streaming, tables waiting for a copy are handed to a sync worker
 * (sync.c) and apply waits for it.  Changes to a copied table that
 * committed before the copy's snapshot are skipped: the copy has them.
 *
 * An error ends the worker: it is recorded in shared memory with a
 * backoff, the local transaction rolls back and the origin stays where it
 * was; the manager starts a new worker when the backoff has passed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "apply/apply.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/own_commits.h"
#include "conflict/seen.h"
#include "conflict/tombstone.h"
#include "conflict/tombstone_gc.h"
#include "remote/remote.h"
#include "shmem/shmem.h"

#define FEEDBACK_INTERVAL_MS	1000
#define CAREFUL_MS				60000
#define STREAM_WAIT_MS			1000

/* A remote commit applied here, waiting for its local commit to flush. */
typedef struct LsnMapping
{
	XLogRecPtr	remote_end;
	XLogRecPtr	local_end;
} LsnMapping;

typedef struct ApplyWorker
{
	ConcordSubscription *sub;
	char	   *local_node;
	PGconn	   *conn;
	ConcordSubState *shared;
	XLogRecPtr	received;		/* provider WAL seen in the stream */
	XLogRecPtr	caught_up;		/* every provider commit before it applied */
	XLogRecPtr	flushed;		/* last flush position sent */
	bool		in_remote_txn;
	bool		skip_txn;
	ConcordBeginMsg begin;
	List	   *lsn_map;		/* of LsnMapping, oldest first */
	TimestampTz last_feedback;
	List	   *seen;			/* the remote writer's vector (seen.c) */
	bool		gaps_checked;	/* concord_gap_check() ran for this one */
	RepOriginId session_origin;
	char		session_origin_node[NAMEDATALEN];
	TimestampTz careful_until;	/* conflict pre-checks on until then */
} ApplyWorker;

static ApplyWorker W;
static ConcordRemoteTxn RemoteTxn;

static void stay_careful(void);
static void stop_if_disabled(void);
static MemoryContext ApplyContext = NULL;
static MemoryContext MessageContext_ = NULL;

static void
apply_detach(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	/* An error may have left concord's lock held: we are leaving anyway. */
	LWLockReleaseAll();
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	if (W.shared && W.shared->apply_pid == MyProcPid)
	{
		W.shared->apply_pid = 0;
		W.shared->apply_latch = NULL;
	}
	LWLockRelease(ConcordShmem->lock);
}

static void
apply_error_context(void *arg pg_attribute_unused())
{
	if (W.sub == NULL)
		return;
	if (W.in_remote_txn)
		errcontext("subscription \"%s\", remote transaction %u from node \"%s\" committed at %X/%X",
				   W.sub->name, W.begin.xid, W.begin.origin_name,
				   LSN_FORMAT_ARGS(W.begin.commit_lsn));
	else
		errcontext("subscription \"%s\"", W.sub->name);
}

/* ---------------------------------------------------------------------
 * Progress and feedback
 * ---------------------------------------------------------------------
 */

/*
 * Publishes progress.  A commit applied, or a keepalive received between
 * transactions (everything the provider sent is handled), shows that the
 * last retry succeeded once apply is past the transaction that failed:
 * the subscription is no longer down, and the backoff starts over.
 * wait_for_apply() callers are woken only once the lowest position one of
 * them waits for is reached (a wake-up per commit costs a signal each).
 */
static void
publish_progress(bool applied_commit, bool healthy)
{
	bool		wake;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared->received_lsn = W.received;
	W.shared->caught_up_lsn = W.caught_up;
	if (applied_commit)
		W.shared->applied_commit_ts = W.begin.commit_time;
	if (healthy && W.caught_up > W.shared->error_lsn)
	{
		W.shared->has_error = false;
		W.shared->failures = 0;
	}
	wake = W.shared->wake_lsn != InvalidXLogRecPtr && W.caught_up >= W.shared->wake_lsn;
	if (wake)
		W.shared->wake_lsn = InvalidXLogRecPtr;
	LWLockRelease(ConcordShmem->lock);
	if (wake)
		ConditionVariableBroadcast(&W.shared->progress_cv);
}

/* The manager asks a worker of a disabled subscription to stop. */
static void
stop_if_disabled(void)
{
	bool		stop;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	stop = W.shared->stop_requested;
	LWLockRelease(ConcordShmem->lock);
	if (!stop)
		return;
	ereport(LOG,
			(errmsg("concord apply worker for subscription \"%s\" stops because the subscription was disabled",
					W.sub->name)));
	proc_exit(0);
}

/* The highest remote position whose local effects are flushed here. */
static XLogRecPtr
flushed_position(void)
{
	XLogRecPtr	local_flush = GetFlushRecPtr(NULL);
	XLogRecPtr	result = W.flushed;
	int			done = 0;
	ListCell   *lc;

	foreach(lc, W.lsn_map)
	{
		LsnMapping *m = lfirst(lc);

		if (m->local_end > local_flush)
			break;
		result = Max(result, m->remote_end);
		pfree(m);
		done++;
	}
	/* One move for the whole flushed prefix: the backlog can be long. */
	W.lsn_map = list_delete_first_n(W.lsn_map, done);
	/* Nothing of ours pending: everything seen is handled and durable. */
	if (W.lsn_map == NIL && !W.in_remote_txn)
		result = Max(result, W.caught_up);
	return result;
}

static void
send_feedback(bool force, bool want_reply)
{
	TimestampTz now = GetCurrentTimestamp();
	StringInfoData buf;
	XLogRecPtr	flush;

	if (!force && !TimestampDifferenceExceeds(W.last_feedback, now,
											  FEEDBACK_INTERVAL_MS))
		return;
	flush = flushed_position();
	initStringInfo(&buf);
	pq_sendbyte(&buf, 'r');
	pq_sendint64(&buf, W.received);	/* written */
	pq_sendint64(&buf, flush);	/* flushed */
	pq_sendint64(&buf, W.caught_up);	/* applied */
	pq_sendint64(&buf, now);
	pq_sendbyte(&buf, want_reply ? 1 : 0);
	if (PQputCopyData(W.conn, buf.data, buf.len) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send feedback to the provider: %s",
						concord_remote_error(W.conn))));
	concord_remote_flush(W.conn);
	pfree(buf.data);
	W.flushed = flush;
	W.last_feedback = now;
	publish_progress(false, false);
}

/* ---------------------------------------------------------------------
 * Transactions
 * ---------------------------------------------------------------------
 */

/* Waits until commit_time + apply_delay, answering the provider meanwhile. */
static void
wait_apply_delay(TimestampTz commit_time)
{
	int64		delay_us = W.sub->apply_delay.time +
		(int64) W.sub->apply_delay.day * USECS_PER_DAY +
		(int64) W.sub->apply_delay.month * DAYS_PER_MONTH * USECS_PER_DAY;
	TimestampTz until = commit_time + delay_us;

	while (delay_us > 0 && GetCurrentTimestamp() < until)
	{
		long		ms = Min(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until),
							 FEEDBACK_INTERVAL_MS);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* Nothing of the transaction is applied yet: stopping is safe. */
		stop_if_disabled();
		send_feedback(false, false);
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
	for (;;)
	{
		long		ahead_ms;

		if (commit_time <= now)
		{
			pgstat_report_activity(STATE_IDLE, NULL);
			return;
		}
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
		stop_if_disabled();
		send_feedback(false, false);
		now = GetCurrentTimestamp();
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
	StartTransactionCommand();
	origin = concord_origin_ensure(W.sub->id, origin_node);
	CommitTransactionCommand();
	if (W.session_origin != InvalidRepOriginId)
		replorigin_session_reset();
	replorigin_session_setup(origin);
	/* Tags this session's WAL, so decoding knows where it came from. */
	replorigin_session_origin = origin;
	W.session_origin = origin;
	strlcpy(W.session_origin_node, origin_node, NAMEDATALEN);
}

/*
 * True if another subscription of this database exists: its worker may
 * apply changes of the same rows at the same time (apply_row.c, lock_key).
 * Looked at again only when a subscription entry was taken or freed.
 */
static bool
other_subscriptions(void)
{
	static bool others = false;
	static uint64 known_generation = PG_UINT64_MAX;
	uint64		generation = pg_atomic_read_u64(&ConcordShmem->subs_generation);

	if (generation == known_generation)
		return others;
	others = false;
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < ConcordShmem->max_entries && !others; i++)
	{
		ConcordSubState *st = &ConcordShmem->subs[i];

		others = st->dboid == MyDatabaseId && st != W.shared;
	}
	LWLockRelease(ConcordShmem->lock);
	known_generation = generation;
	return others;
}

static void
handle_begin(StringInfo s)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(ApplyContext);

	if (W.in_remote_txn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("BEGIN inside a remote transaction")));
	if (W.begin.origin_name)
		pfree(W.begin.origin_name);
	concord_read_begin(s, &W.begin);
	MemoryContextSwitchTo(oldcxt);

	/* Never apply a change back onto the node it came from. */
	W.skip_txn = strcmp(W.begin.origin_name, W.local_node) == 0;
	if (!W.skip_txn)
	{
		wait_apply_delay(W.begin.commit_time);
		wait_for_clock(W.begin.commit_time);
		use_origin(W.begin.origin_name);
		/* now() in the transaction, e.g. conflict_history.detected_at */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		/* Deferred triggers fire as the table's owner too (owner.c). */
		concord_constraints_immediate();
	}
	W.in_remote_txn = true;
	W.seen = NIL;
	W.gaps_checked = false;
	concord_apply_lock_keys = other_subscriptions();
	if (concord_apply_careful && W.last_feedback > W.careful_until)
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

static void
handle_commit(StringInfo s)
{
	ConcordCommitMsg msg;

	concord_read_commit(s, &msg);
	if (!W.in_remote_txn || msg.commit_lsn != W.begin.commit_lsn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("COMMIT does not match the open remote transaction")));
	if (!W.skip_txn)
	{
		MemoryContext oldcxt;
		LsnMapping *m;
		FullTransactionId fxid = GetTopFullTransactionIdIfAny();

		replorigin_session_origin_lsn = msg.end_lsn;
		replorigin_session_origin_timestamp = msg.commit_time;
		/* W.seen lives in the transaction: note it first (still true). */
		concord_confirm_record(W.begin.origin_name, W.seen);
		W.seen = NIL;
		CommitTransactionCommand();
		concord_own_commit_note(fxid, replorigin_session_origin);
		concord_seen_applied(W.begin.origin_name, W.begin.commit_time);
		oldcxt = MemoryContextSwitchTo(ApplyContext);
		m = palloc(sizeof(LsnMapping));
		m->remote_end = msg.end_lsn;
		m->local_end = XactLastCommitEnd;
		W.lsn_map = lappend(W.lsn_map, m);
		MemoryContextSwitchTo(oldcxt);
	}
	W.in_remote_txn = false;
	W.received = Max(W.received, msg.end_lsn);
	W.caught_up = Max(W.caught_up, msg.end_lsn);
	if (concord_apply_conflicts > 0)
		stay_careful();
	publish_progress(!W.skip_txn, true);
}

/*
 * Conflict look-ups stay on for a while after the last conflict: where
 * one conflict happened, more tend to follow.
 */
static void
stay_careful(void)
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
static bool
retry_carefully(void)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ErrorData  *edata = CopyErrorData();
	bool		retry = edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION &&
		W.in_remote_txn && !concord_apply_careful;

	MemoryContextSwitchTo(oldcxt);
	FreeErrorData(edata);
	if (!retry)
		return false;
	stay_careful();
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
	char		oldkind = CONCORD_OLD_NONE;
	Oid			relid;
	ApplyRel   *arel;

	check_in_txn();
	switch (type)
	{
		case CONCORD_MSG_INSERT:
			relid = concord_read_insert(s, &newtup);
			break;
		case CONCORD_MSG_UPDATE:
			relid = concord_read_update(s, &oldkind, &oldtup, &newtup);
			break;
		default:
			relid = concord_read_delete(s, &oldkind, &oldtup);
			break;
	}
	if (W.skip_txn)
		return;
	PushActiveSnapshot(GetTransactionSnapshot());
	arel = concord_apply_rel_get(relid, RowExclusiveLock);
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
	(void) LogLogicalMessage(CONCORD_SEEN_PREFIX, payload, len, true);
}

static void
dispatch(StringInfo s)
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
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unknown concord message type %d", type)));
	}
}

/* One CopyData message of the replication stream. */
static void
handle_stream_message(char *buf, int len)
{
	StringInfoData s;
	char		kind;

	s.data = buf;
	s.len = len;
	s.maxlen = len;
	s.cursor = 0;
	kind = pq_getmsgbyte(&s);
	if (kind == 'w')
	{
		XLogRecPtr	start = pq_getmsgint64(&s);

		(void) pq_getmsgint64(&s);	/* provider's WAL end */
		(void) pq_getmsgint64(&s);	/* send time */
		W.received = Max(W.received, start);
		/*
		 * From version 2 on, several messages may come in one; each is
		 * read in MessageContext_ (BEGIN leaves the transaction's context
		 * current), which forgets it before the next.
		 */
		do
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(MessageContext_);

			dispatch(&s);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(MessageContext_);
		} while (s.cursor < s.len);
	}
	else if (kind == 'k')
	{
		XLogRecPtr	end = pq_getmsgint64(&s);
		bool		reply;

		(void) pq_getmsgint64(&s);
		reply = pq_getmsgbyte(&s);
		W.received = Max(W.received, end);
		/* Everything before a keepalive was sent and handled. */
		if (!W.in_remote_txn)
		{
			W.caught_up = Max(W.caught_up, end);
			publish_progress(false, true);
		}
		send_feedback(reply, false);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unknown replication message type %d", kind)));
}

/* ---------------------------------------------------------------------
 * Start-up and the stream
 * ---------------------------------------------------------------------
 */

/* Appends name as an element of a comma-separated identifier list. */
static void
append_list(StringInfo buf, List *names)
{
	ListCell   *lc;

	foreach(lc, names)
		appendStringInfo(buf, "%s%s", foreach_current_index(lc) > 0 ? "," : "",
						 quote_identifier(lfirst(lc)));
}

static void
start_streaming(XLogRecPtr start)
{
	StringInfoData cmd;
	StringInfoData list;
	PGresult   *res;

	initStringInfo(&cmd);
	initStringInfo(&list);
	appendStringInfo(&cmd, "START_REPLICATION SLOT %s LOGICAL %X/%X (\"proto_version\" '%d'",
					 quote_identifier(W.sub->slot_name), LSN_FORMAT_ARGS(start),
					 CONCORD_PROTO_VERSION);
	append_list(&list, W.sub->replication_sets);
	appendStringInfo(&cmd, ", \"replication_sets\" %s", quote_literal_cstr(list.data));
	resetStringInfo(&list);
	append_list(&list, W.sub->forward_origins);
	appendStringInfo(&cmd, ", \"forward_origins\" %s", quote_literal_cstr(list.data));
	appendStringInfo(&cmd, ", \"subscriber_node\" %s)", quote_literal_cstr(W.local_node));

	res = concord_remote_exec(W.conn, cmd.data, 0, NULL);
	if (res == NULL || PQresultStatus(res) != PGRES_COPY_BOTH)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not start streaming from the provider: %s",
						res ? pchomp(PQresultErrorMessage(res)) :
						concord_remote_error(W.conn))));
	PQclear(res);
}

static void
stream_loop(void)
{
	for (;;)
	{
		char	   *buf = NULL;
		int			len;

		CHECK_FOR_INTERRUPTS();
		if (!W.in_remote_txn)
			stop_if_disabled();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			concord_apply_rel_forget_all();
		}
		while ((len = concord_remote_get_copy(W.conn, &buf, false)) > 0)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(MessageContext_);

			handle_stream_message(buf, len);
			PQfreemem(buf);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(MessageContext_);
		}
		if (len == -1)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the provider ended the replication stream")));
		send_feedback(false, false);
		concord_remote_wait_readable(W.conn, STREAM_WAIT_MS);
		if (!PQconsumeInput(W.conn))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("lost the connection to the provider: %s",
							concord_remote_error(W.conn))));
	}
}

/* Runs the sync worker for pending copies and waits for it; false if it failed. */
static bool
run_sync(void)
{
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared->phase = CONCORD_PHASE_SYNCING;
	LWLockRelease(ConcordShmem->lock);
	if (!concord_start_worker("concord sync", "concord_sync_main",
							  MyDatabaseId, W.sub->id, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a sync worker for subscription \"%s\"",
						W.sub->name),
				 errhint("Increase max_worker_processes.")));
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		return false;
	(void) WaitForBackgroundWorkerShutdown(handle);
	return true;
}

/* Loads the subscription; exits quietly if it is gone or disabled. */
static List *
load_subscription(Oid subid, bool *needs_sync)
{
	ConcordSubscription *sub;
	ConcordNode *local;
	List	   *tables;
	ListCell   *lc;
	MemoryContext oldcxt;

	StartTransactionCommand();
	LockDatabaseObject(concord_catalog_relid(CATALOG_SUBSCRIPTION, false),
					   subid, 0, AccessShareLock);
	sub = concord_subscription_get_by_id(subid);
	local = concord_node_get_local(true);
	if (sub == NULL || !sub->enabled || local == NULL)
	{
		CommitTransactionCommand();
		proc_exit(0);
	}
	tables = concord_sub_table_get(subid);
	*needs_sync = !sub->sync_done;
	foreach(lc, tables)
		if (((ConcordSubTable *) lfirst(lc))->pending)
			*needs_sync = true;
	oldcxt = MemoryContextSwitchTo(ApplyContext);
	W.sub = palloc(sizeof(ConcordSubscription));
	*W.sub = *sub;
	W.sub->name = pstrdup(sub->name);
	W.sub->slot_name = pstrdup(sub->slot_name);
	W.sub->provider_dsn = pstrdup(sub->provider_dsn);
	W.sub->replication_sets = NIL;
	foreach(lc, sub->replication_sets)
		W.sub->replication_sets = lappend(W.sub->replication_sets, pstrdup(lfirst(lc)));
	W.sub->forward_origins = NIL;
	foreach(lc, sub->forward_origins)
		W.sub->forward_origins = lappend(W.sub->forward_origins, pstrdup(lfirst(lc)));
	W.local_node = pstrdup(local->name);
	MemoryContextSwitchTo(oldcxt);
	concord_apply_rel_init(sub->name, tables);
	CommitTransactionCommand();
	return tables;
}

static void
apply_run(Oid subid)
{
	bool		needs_sync;
	XLogRecPtr	start;

	(void) load_subscription(subid, &needs_sync);
	if (needs_sync)
	{
		if (!run_sync())
			proc_exit(1);
		/* Start again with what the copy recorded. */
		proc_exit(0);
	}

	StartTransactionCommand();
	start = concord_origin_sub_progress(subid);
	CommitTransactionCommand();

	W.conn = concord_remote_connect(W.sub->provider_dsn, true, W.sub->name);
	start_streaming(start);
	W.received = W.caught_up = W.flushed = start;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared->phase = CONCORD_PHASE_REPLICATING;
	LWLockRelease(ConcordShmem->lock);
	publish_progress(false, false);
	/* The provider's answer, a keepalive, tells that the stream is healthy. */
	send_feedback(true, true);
	stream_loop();
}

static void
set_apply_gucs(void)
{
	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("datestyle", "ISO", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("intervalstyle", "postgres", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("extra_float_digits", "3", PGC_SUSET, PGC_S_OVERRIDE);
}

static void
attach_shared(Oid dboid, Oid subid)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared = concord_sub_state(dboid, subid, true);
	if (W.shared == NULL)
	{
		LWLockRelease(ConcordShmem->lock);
		concord_no_room_error(ERROR, NULL);
	}
	W.shared->apply_pid = MyProcPid;
	W.shared->apply_latch = MyLatch;
	W.shared->phase = CONCORD_PHASE_INITIALIZING;
	W.shared->stop_requested = false;
	W.careful_until = W.shared->careful_until;
	concord_own_commits_attach(concord_sub_commit_runs(W.shared));
	LWLockRelease(ConcordShmem->lock);
	concord_apply_careful = W.careful_until > GetCurrentTimestamp();
	before_shmem_exit(apply_detach, (Datum) 0);
}

void
concord_apply_main(Datum main_arg)
{
	Oid			subid = DatumGetObjectId(main_arg);
	Oid			dboid;
	ErrorContextCallback errcb;

	dboid = concord_worker_connect();

	ApplyContext = AllocSetContextCreate(TopMemoryContext, "concord apply",
										 ALLOCSET_DEFAULT_SIZES);
	MessageContext_ = AllocSetContextCreate(ApplyContext, "concord apply message",
											ALLOCSET_DEFAULT_SIZES);
	concord_is_worker = true;
	attach_shared(dboid, subid);
	set_apply_gucs();

	errcb.callback = apply_error_context;
	errcb.arg = NULL;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	PG_TRY();
	{
		apply_run(subid);
	}
	PG_CATCH();
	{
		if (retry_carefully())
			proc_exit(0);
		/* A failed transaction counts as retried once it is applied. */
		LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
		W.shared->error_lsn = W.in_remote_txn ? W.begin.commit_lsn : InvalidXLogRecPtr;
		LWLockRelease(ConcordShmem->lock);
		concord_record_current_error(W.shared);
		PG_RE_THROW();
	}
	PG_END_TRY();
}
