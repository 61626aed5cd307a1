/*-------------------------------------------------------------------------
 *
 * apply.c
 *		The apply worker: one per enabled subscription.  This file holds its
 *		life (start-up, the stream, progress and feedback, errors);
 *		apply_xact.c its remote transactions.
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
#include "apply/parallel.h"
#include "apply/worker.h"
#include "catalog/identity.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/conflict.h"
#include "conflict/own_commits.h"
#include "conflict/seen.h"
#include "conflict/tombstone.h"
#include "conflict/tombstone_gc.h"
#include "remote/remote.h"
#include "shmem/position.h"
#include "shmem/shmem.h"

#define STREAM_WAIT_MS			1000

ApplyWorker concord_apply_worker;
MemoryContext concord_apply_cxt = NULL;
MemoryContext concord_apply_message_cxt = NULL;

static void
apply_detach(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	/* An error may have left concord's lock held: we are leaving anyway. */
	LWLockReleaseAll();
	/* Its workers first: none may commit once the next leader starts. */
	concord_leader_stop_workers();
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	if (W.shared && W.shared->apply_pid == MyProcPid)
	{
		W.shared->apply_pid = 0;
		W.shared->apply_latch = NULL;
	}
	LWLockRelease(ConcordShmem->lock);
	/* After the last commit: a clean stop keeps exact positions. */
	concord_apply_settle_position();
	concord_position_save();
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
/*
 * Whether the backoff may start over.  After a failure in a transaction,
 * once apply is past it.  After one between transactions (a lost or
 * silent stream), once this stream has stayed up for
 * concord.receive_timeout (10 s without one): a keepalive right after
 * reconnecting proves little, and a provider that failed at the same place
 * every time was asked again every second (review).  The subscription
 * shows replicating again at once all the same.
 */
static bool
error_outlived(void)
{
	int			grace = concord_receive_timeout > 0 ? concord_receive_timeout : 10000;

	return W.shared->error_lsn != InvalidXLogRecPtr ||
		TimestampDifferenceExceeds(W.stream_since, GetCurrentTimestamp(), grace);
}

void
concord_apply_publish_progress(bool applied_commit, bool healthy)
{
	bool		wake;
	XLogRecPtr	caught_up;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	/* A worker of several knows what it applied, the leader the stream. */
	if (!concord_pworker_active())
	{
		W.shared->received_lsn = W.received;
		W.shared->provider_lsn = Max(W.provider_lsn, W.received);
		W.shared->idle = W.idle;
	}
	if (concord_pworker_active() || concord_leader_active())
		W.shared->caught_up_lsn = Max(W.shared->caught_up_lsn, W.caught_up);
	else
		W.shared->caught_up_lsn = W.caught_up;
	caught_up = W.shared->caught_up_lsn;
	if (applied_commit)
	{
		TimestampTz now = GetCurrentTimestamp();

		W.shared->held_commit_ts = 0;

		W.shared->applied_commit_ts = W.begin.commit_time;
		/*
		 * The provider's own transactions: a forwarded one's time is that
		 * of its origin, and a forwarded copy's that of the rows it copied.
		 */
		if (W.provider_node && strcmp(W.begin.origin_name, W.provider_node) == 0)
			concord_lag_record(concord_sub_lag(W.shared), now,
							   now - W.begin.commit_time);
	}
	/*
	 * A worker of several clears only an error of a transaction it is now
	 * past; the leader, which has the stream, the others.
	 */
	if (healthy && caught_up > W.shared->error_lsn &&
		(!concord_pworker_active() || W.shared->error_lsn != InvalidXLogRecPtr))
	{
		W.shared->has_error = false;
		if (error_outlived())
			W.shared->failures = 0;
	}
	wake = W.shared->wake_lsn != InvalidXLogRecPtr && caught_up >= W.shared->wake_lsn;
	if (wake)
		W.shared->wake_lsn = InvalidXLogRecPtr;
	LWLockRelease(ConcordShmem->lock);
	if (wake)
		ConditionVariableBroadcast(&W.shared->progress_cv);
}

/*
 * The manager asks a worker to stop when its subscription is disabled, or
 * when the database turns out to be a copy of its node.
 */
void
concord_apply_stop_if_disabled(void)
{
	bool		stop;

	/* A worker of several is stopped by its leader. */
	if (concord_pworker_active())
		return;
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	stop = W.shared->stop_requested;
	LWLockRelease(ConcordShmem->lock);
	if (!stop)
		return;
	ereport(LOG,
			(errmsg("concord apply worker for subscription \"%s\" stops at the manager's request (the subscription is disabled, or this database is a copy of its node)",
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

	concord_leader_collect();
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
	if (W.lsn_map == NIL && !W.in_remote_txn && concord_leader_idle())
		result = Max(result, W.caught_up);
	return result;
}

void
concord_apply_send_feedback(bool force, bool want_reply)
{
	TimestampTz now = GetCurrentTimestamp();
	StringInfoData buf;
	XLogRecPtr	flush;

	/* A worker of several has no stream: its leader answers. */
	if (concord_pworker_active())
		return;
	if (!force && !TimestampDifferenceExceeds(W.last_feedback, now,
											  FEEDBACK_INTERVAL_MS))
		return;
	flush = flushed_position();
	initStringInfo(&buf);
	pq_sendbyte(&buf, 'r');
	pq_sendint64(&buf, W.received);	/* written */
	pq_sendint64(&buf, flush);	/* flushed */
	/* applied: committed, visible and durable, as a standby's replay is */
	pq_sendint64(&buf, Min(W.caught_up, flush));
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
	W.reported = W.received;
	W.last_feedback = now;
	concord_apply_publish_progress(false, false);
}

/*
 * Commits the provider may be waiting for were applied (their COMMIT said
 * so: output.c): reports them now, not within the second.  First what is
 * received, which releases the provider's remote_write waits, then, once
 * this node's WAL is flushed up to them (apply commits asynchronously),
 * what is flushed and applied (committed here, hence visible), which
 * releases those of synchronous_commit on and remote_apply.  Called once
 * the stream's pending messages are handled, so that a burst of commits
 * costs one flush, and before apply waits (apply_delay, the clock).
 */
void
concord_apply_report_sync(void)
{
	if (concord_pworker_active())
		return;
	W.sync_report = false;
	concord_apply_send_feedback(true, false);
	XLogFlush(XactLastCommitEnd);
	concord_apply_send_feedback(true, false);
}

/* The stream delivered a message: it is alive. */
static void
note_message(void)
{
	W.silent_ms = 0;
	W.pinged = false;
	pg_atomic_write_u64(&W.shared->last_msg_at, (uint64) GetCurrentTimestamp());
}

/*
 * The stream stayed silent while apply waited on it for waited_ms more.
 * After half of concord.receive_timeout, the provider is asked for a reply
 * (a live one answers with a keepalive at once); after all of it, the
 * stream is dead, whatever TCP thinks: a firewall or NAT that forgot the
 * connection drops its packets without closing it.  The error ends the
 * worker; the subscription shows down and reconnects with backoff.
 */
static void
check_silence(long waited_ms)
{
	W.silent_ms += waited_ms;
	if (concord_receive_timeout <= 0)
		return;
	if (W.silent_ms >= concord_receive_timeout)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("no message from the provider for %ld ms: the replication stream is taken as dead",
						W.silent_ms),
				 errhint("The subscription reconnects with backoff; see concord.receive_timeout.")));
	if (!W.pinged && W.silent_ms >= concord_receive_timeout / 2)
	{
		concord_apply_send_feedback(true, true);
		W.pinged = true;
	}
}

/* How long the next wait on the stream may be, so that checks are on time. */
static long
silence_step(void)
{
	if (concord_receive_timeout <= 0)
		return STREAM_WAIT_MS;
	return Max(concord_receive_timeout / 4, 10);
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
	note_message();
	if (kind == 'w')
	{
		XLogRecPtr	start = pq_getmsgint64(&s);
		XLogRecPtr	end = pq_getmsgint64(&s);

		(void) pq_getmsgint64(&s);	/* send time */
		W.received = Max(W.received, start);
		W.provider_lsn = Max(W.provider_lsn, end);
		/* Busy: the lag views must know at once, not at the next commit. */
		if (W.idle)
		{
			W.idle = false;
			LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
			W.shared->idle = false;
			LWLockRelease(ConcordShmem->lock);
		}
		/*
		 * From version 2 on, several messages may come in one; each is
		 * read in concord_apply_message_cxt (BEGIN leaves the transaction's context
		 * current), which forgets it before the next.
		 */
		if (concord_leader_active())
			concord_leader_messages(&s);
		else
			do
			{
				MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_message_cxt);

				concord_apply_dispatch(&s);
				MemoryContextSwitchTo(oldcxt);
				MemoryContextReset(concord_apply_message_cxt);
			} while (s.cursor < s.len);
	}
	else if (kind == 'k')
	{
		XLogRecPtr	end = pq_getmsgint64(&s);
		bool		reply;

		(void) pq_getmsgint64(&s);
		reply = pq_getmsgbyte(&s);
		W.received = Max(W.received, end);
		/* Sent while it waits for WAL, end is where its WAL ends. */
		W.provider_lsn = Max(W.provider_lsn, end);
		/* Everything before a keepalive was sent and handled. */
		W.idle = !W.in_remote_txn && concord_leader_idle();
		if (W.idle)
		{
			W.caught_up = Max(W.caught_up, end);
			concord_apply_publish_progress(false, true);
		}

		/*
		 * A provider whose commits may wait for this node sends a keepalive
		 * for a transaction it ships nothing of: one that moves the
		 * position is answered at once.
		 */
		concord_apply_send_feedback(reply || (W.sync_listed && W.received > W.reported),
									false);
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

/*
 * Whether START_REPLICATION failed only because the slot is still active for
 * another WAL sender, and for less than SLOT_HELD_WAIT_MS since the first
 * attempt.  Most often that WAL sender served this subscription's previous
 * worker, which ended a moment ago (after an error, or at a disable and
 * enable) and whose provider side has not noticed yet: it goes within
 * milliseconds, and a failure here would only hide the error that ended the
 * previous worker behind a transient one in last_error.  A slot held longer
 * (a dead stream the provider keeps until its wal_sender_timeout, another
 * consumer) is reported as before.
 */
#define SLOT_HELD_WAIT_MS	10000
#define SLOT_HELD_POLL_MS	100

static bool
slot_still_held(PGresult *res, TimestampTz since)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	return state != NULL &&
		strcmp(state, "55006") == 0 &&	/* ERRCODE_OBJECT_IN_USE */
		!TimestampDifferenceExceeds(since, GetCurrentTimestamp(), SLOT_HELD_WAIT_MS);
}

static void
start_streaming(XLogRecPtr start)
{
	StringInfoData cmd;
	StringInfoData list;
	PGresult   *res;
	TimestampTz since = GetCurrentTimestamp();

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

	while ((res = concord_remote_exec(W.conn, cmd.data, 0, NULL)) != NULL &&
		   PQresultStatus(res) != PGRES_COPY_BOTH &&
		   slot_still_held(res, since))
	{
		PQclear(res);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SLOT_HELD_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		concord_apply_stop_if_disabled();
	}
	if (res == NULL || PQresultStatus(res) != PGRES_COPY_BOTH)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not start streaming from the provider: %s",
						res ? pchomp(PQresultErrorMessage(res)) :
						concord_remote_error(W.conn))));
	PQclear(res);
}

/* At a reload: the new settings, and as many workers as now asked. */
void
concord_apply_reload_config(void)
{
	if (!ConfigReloadPending)
		return;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	concord_apply_rel_forget_all();
	/* Started again at once, with as many workers as now asked. */
	if (concord_apply_workers != W.nworkers)
	{
		ereport(LOG,
				(errmsg("concord subscription \"%s\" restarts its apply with %d workers (concord.apply_workers_per_subscription)",
						W.sub->name, concord_apply_workers)));
		proc_exit(0);
	}
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
			concord_apply_stop_if_disabled();
		concord_apply_reload_config();
		while ((len = concord_remote_get_copy(W.conn, &buf, false)) > 0)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_message_cxt);

			handle_stream_message(buf, len);
			PQfreemem(buf);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(concord_apply_message_cxt);
		}
		if (len == -1)
		{
			char	   *why = concord_remote_copy_error(W.conn);

			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 why ? errmsg("the provider ended the replication stream: %s", why)
					 : errmsg("the provider ended the replication stream")));
		}
		if (concord_leader_active())
		{
			concord_leader_check();
			concord_leader_collect();
		}
		if (W.sync_report)
			concord_apply_report_sync();
		concord_apply_send_feedback(false, false);
		{
			TimestampTz before = GetCurrentTimestamp();

			/* Only time spent waiting on the stream counts as silence. */
			concord_remote_wait_readable(W.conn, Min(STREAM_WAIT_MS, silence_step()));
			check_silence(TimestampDifferenceMilliseconds(before, GetCurrentTimestamp()));
		}
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
List *
concord_apply_load_subscription(Oid subid, bool *needs_sync)
{
	ConcordSubscription *sub;
	ConcordNode *local;
	ConcordNode *provider;
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
	{
		char	   *why;

		/* A copy of the node never streams from the original's slots. */
		if (!concord_identity_check(&why))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this database is a copy of node \"%s\", not that node", local->name),
					 errdetail("%s.", why),
					 errhint(COPY_HINT)));
	}
	tables = concord_sub_table_get(subid);
	*needs_sync = !sub->sync_done;
	foreach(lc, tables)
		if (((ConcordSubTable *) lfirst(lc))->pending)
			*needs_sync = true;
	oldcxt = MemoryContextSwitchTo(concord_apply_cxt);
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
	provider = concord_node_get_by_id(sub->provider_node_id);
	W.provider_node = provider ? pstrdup(provider->name) : NULL;
	MemoryContextSwitchTo(oldcxt);
	concord_apply_rel_init(sub->name, tables);
	CommitTransactionCommand();
	return tables;
}

/*
 * A subscription made by join_mesh streams only once the copy from the
 * peer covers its provider's older changes: that copy (of the
 * subscription join_copy_via) clears join_copy_via and sets
 * join_start_lsn, in its own transaction (sync.c).
 */
static void
wait_for_join_copy(Oid subid)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared->phase = CONCORD_PHASE_SYNCING;
	LWLockRelease(ConcordShmem->lock);
	for (;;)
	{
		ConcordSubscription *sub;
		bool		via_exists;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		concord_apply_stop_if_disabled();
		StartTransactionCommand();
		sub = concord_subscription_get_by_id(subid);
		if (sub == NULL || !sub->enabled)
			proc_exit(0);
		if (!OidIsValid(sub->join_copy_via))
		{
			W.sub->join_copy_via = InvalidOid;
			W.sub->join_start_lsn = sub->join_start_lsn;
			CommitTransactionCommand();
			return;
		}
		via_exists = concord_subscription_get_by_id(sub->join_copy_via) != NULL;
		CommitTransactionCommand();
		if (!via_exists)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("subscription \"%s\" waits for the copy of a subscription that was dropped",
							W.sub->name),
					 errdetail("concord.join_mesh() made it to start where the copy from the peer leaves off."),
					 errhint("Drop this node's subscriptions and call concord.join_mesh() again on emptied tables.")));
	}
}

static void
apply_run(Oid subid)
{
	bool		needs_sync;
	XLogRecPtr	start;

	(void) concord_apply_load_subscription(subid, &needs_sync);
	/* Made by join_mesh: no copy of its own before the peer's is done. */
	if (OidIsValid(W.sub->join_copy_via))
		wait_for_join_copy(subid);
	if (needs_sync)
	{
		if (!run_sync())
			proc_exit(1);
		/* Start again with what the copy recorded. */
		proc_exit(0);
	}

	StartTransactionCommand();
	start = Max(concord_origin_sub_progress(subid), W.sub->join_start_lsn);
	CommitTransactionCommand();
	W.nworkers = concord_apply_workers;
	if (W.nworkers > 1)
		concord_leader_start(W.nworkers);

	W.conn = concord_remote_connect(W.sub->provider_dsn, true, W.sub->name,
									W.sub->password_required);
	start_streaming(start);
	W.stream_since = GetCurrentTimestamp();
	W.received = W.caught_up = W.flushed = W.provider_lsn = start;
	note_message();

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	W.shared->phase = CONCORD_PHASE_REPLICATING;
	W.shared->held_commit_ts = 0;
	LWLockRelease(ConcordShmem->lock);
	concord_apply_publish_progress(false, false);
	/* The provider's answer, a keepalive, tells that the stream is healthy. */
	concord_apply_send_feedback(true, true);
	stream_loop();
}

void
concord_apply_set_gucs(void)
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

	concord_apply_cxt = AllocSetContextCreate(TopMemoryContext, "concord apply",
										 ALLOCSET_DEFAULT_SIZES);
	concord_apply_message_cxt = AllocSetContextCreate(concord_apply_cxt, "concord apply message",
											ALLOCSET_DEFAULT_SIZES);
	concord_is_worker = true;
	attach_shared(dboid, subid);
	concord_apply_set_gucs();

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
		if (concord_apply_retry_carefully())
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
