/*-------------------------------------------------------------------------
 *
 * apply_leader.c
 *		The leader of a subscription applied by several workers
 *		(parallel.h): it reads the stream, cuts it into units and hands
 *		each to a free worker.
 *
 * The leader applies nothing and holds no row lock.  It keeps what the
 * stream is about (received, keepalives, feedback, MARKs to pass on in
 * order) and learns from the workers' shared state what is applied and
 * flushed: the feedback it sends never passes a unit that is not done, or
 * a local commit that is not flushed.
 *
 * A worker takes one unit at a time: a unit is handed only to a worker
 * that is done with its previous one.  A unit waits only for earlier
 * ones, each held by a worker that is busy with it, so the workers never
 * wait on one another in a circle outside the lock manager's sight.  A
 * remote transaction larger than CHUNK_BYTES is handed over in chunks as
 * it arrives, after every earlier unit is done (serial): the leader never
 * holds more than a chunk of it.
 *
 * When a worker fails, the leader stops the others and exits; the
 * manager starts the subscription again from its origins' progress.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "storage/spin.h"
#include "utils/memutils.h"

#include "apply/apply.h"
#include "apply/parallel.h"
#include "apply/worker.h"
#include "concord.h"
#include "shmem/shmem.h"

#define CHUNK_BYTES		(256 * 1024)
#define LEADER_WAIT_MS	1000

/* A RELATION message, kept to hand to every worker before it needs it */
typedef struct RelMessage
{
	Oid			remoteid;
	uint64		generation;
	int			len;
	char	   *data;
} RelMessage;

typedef struct Leader
{
	dsm_segment *seg;
	ConcordApplyCtl *ctl;
	int			nworkers;
	shm_mq_handle *mqh[CONCORD_MAX_APPLY_WORKERS];
	BackgroundWorkerHandle *handle[CONCORD_MAX_APPLY_WORKERS];
	uint64		assigned[CONCORD_MAX_APPLY_WORKERS];	/* its latest unit */
	uint64		rel_sent[CONCORD_MAX_APPLY_WORKERS];	/* RELATION messages
														 * it has, up to */
	uint64		seq;			/* the latest unit numbered */
	StringInfoData unit;		/* the open unit's messages */
	bool		unit_open;
	bool		unit_streaming; /* its first chunk is handed over */
	int			unit_worker;
	List	   *relations;		/* of RelMessage */
	uint64		rel_generation;
	uint64		unit_rel_generation;	/* rel_generation when the open
										 * unit began */
	char		prepared_origin[NAMEDATALEN];	/* the origin prepared last */
} Leader;

static Leader *L = NULL;

static void prune_relations(void);

bool
concord_leader_active(void)
{
	return L != NULL;
}

/* ---------------------------------------------------------------------
 * The workers
 * ---------------------------------------------------------------------
 */

static shm_mq *
worker_queue(ConcordApplyCtl *ctl, int i)
{
	return (shm_mq *) ((char *) ctl + MAXALIGN(sizeof(ConcordApplyCtl)) +
					   (Size) i * CONCORD_APPLY_QUEUE_SIZE);
}

static void
start_worker(int i)
{
	BackgroundWorker worker;
	dsm_handle	handle = dsm_segment_handle(L->seg);
	int32		index = i;

	concord_fill_worker(&worker, "concord apply worker", "concord_apply_pworker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "concord apply worker %u/%u #%d",
			 MyDatabaseId, W.sub->id, i + 1);
	worker.bgw_main_arg = ObjectIdGetDatum(W.sub->id);
	memcpy(worker.bgw_extra, &MyDatabaseId, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &handle, sizeof(dsm_handle));
	memcpy(worker.bgw_extra + sizeof(Oid) + sizeof(dsm_handle), &index, sizeof(int32));
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &L->handle[i]))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start apply worker %d of subscription \"%s\"",
						i + 1, W.sub->name),
				 errhint("Raise max_worker_processes, or lower concord.apply_workers_per_subscription.")));
	shm_mq_set_handle(L->mqh[i], L->handle[i]);
}

/*
 * At the leader's exit: its workers stop before it is gone, so that the
 * next leader never starts while a worker of this one may still commit.
 */
void
concord_leader_stop_workers(void)
{
	if (L == NULL)
		return;
	for (int i = 0; i < L->nworkers; i++)
		if (L->handle[i])
			TerminateBackgroundWorker(L->handle[i]);
	for (int i = 0; i < L->nworkers; i++)
		if (L->handle[i])
			(void) WaitForBackgroundWorkerShutdown(L->handle[i]);
}

/*
 * Starts the workers, with a DSM segment of the control struct and a
 * queue per worker.  The segment lives until the leader exits.
 */
void
concord_leader_start(int nworkers)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	Size		size = MAXALIGN(sizeof(ConcordApplyCtl)) +
		(Size) nworkers * CONCORD_APPLY_QUEUE_SIZE;
	ConcordApplyCtl *ctl;

	L = palloc0(sizeof(Leader));
	L->nworkers = nworkers;
	L->seg = dsm_create(size, 0);
	dsm_pin_mapping(L->seg);
	ctl = L->ctl = dsm_segment_address(L->seg);
	memset(ctl, 0, sizeof(ConcordApplyCtl));
	ctl->dboid = MyDatabaseId;
	ctl->subid = W.sub->id;
	ctl->nworkers = nworkers;
	ctl->leader_pid = MyProcPid;
	ctl->leader_latch = MyLatch;
	pg_atomic_init_u64(&ctl->done, 0);
	for (int i = 0; i < CONCORD_MAX_APPLY_WORKERS; i++)
		pg_atomic_init_u64(&ctl->locked[i], 0);
	pg_atomic_init_u32(&ctl->failure, CONCORD_PAPPLY_OK);
	pg_atomic_init_u32(&ctl->sync_pending, 0);
	pg_atomic_init_u32(&ctl->leader_waiting, 0);
	SpinLockInit(&ctl->mutex);
	ConditionVariableInit(&ctl->cv);
	for (int i = 0; i < nworkers; i++)
	{
		shm_mq	   *mq = shm_mq_create(worker_queue(ctl, i), CONCORD_APPLY_QUEUE_SIZE);

		shm_mq_set_sender(mq, MyProc);
		L->mqh[i] = shm_mq_attach(mq, L->seg, NULL);
	}
	initStringInfo(&L->unit);
	concord_deps_init();
	MemoryContextSwitchTo(oldcxt);
	for (int i = 0; i < nworkers; i++)
		start_worker(i);
}

/*
 * Whether the workers are well.  A worker that failed recorded its error;
 * the leader stops the others (at its exit) and ends: with code 0 after
 * a unique violation to replay carefully, at once, as one worker does.
 */
void
concord_leader_check(void)
{
	uint32		failure;

	if (L == NULL)
		return;
	failure = pg_atomic_read_u32(&L->ctl->failure);
	if (failure == CONCORD_PAPPLY_OK)
	{
		for (int i = 0; i < L->nworkers; i++)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(L->handle[i], &pid) == BGWH_STOPPED)
				failure = pg_atomic_read_u32(&L->ctl->failure);
			if (failure == CONCORD_PAPPLY_OK &&
				GetBackgroundWorkerPid(L->handle[i], &pid) == BGWH_STOPPED)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("apply worker %d of subscription \"%s\" stopped",
								i + 1, W.sub->name)));
		}
	}
	/* At once: a replay with look-ups, or a worker that left quietly. */
	if (failure == CONCORD_PAPPLY_CAREFUL || failure == CONCORD_PAPPLY_STOPPED)
		proc_exit(0);
	if (failure != CONCORD_PAPPLY_OK)
	{
		ereport(LOG,
				(errmsg("concord subscription \"%s\": an apply worker failed, stopping the others",
						W.sub->name)));
		proc_exit(1);
	}
}

/* The leader's wait: for a worker, or room in its queue. */
static void
leader_wait(void)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 LEADER_WAIT_MS, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	concord_leader_check();
	/* Stopping here is safe: the workers roll back what is not done. */
	concord_apply_stop_if_disabled();
	concord_apply_reload_config();
	concord_leader_collect();
	if (W.sync_report)
		concord_apply_report_sync();
	concord_apply_send_feedback(false, false);
}

/*
 * Learns from the workers what is applied: the latest commit, as a
 * remote end and local end for the flush feedback (apply.c), and every
 * provider commit done.
 */
void
concord_leader_collect(void)
{
	XLogRecPtr	remote_end;
	XLogRecPtr	local_end;
	XLogRecPtr	caught_up;

	if (L == NULL)
		return;
	SpinLockAcquire(&L->ctl->mutex);
	remote_end = L->ctl->commit_remote_end;
	local_end = L->ctl->commit_local_end;
	caught_up = L->ctl->caught_up;
	SpinLockRelease(&L->ctl->mutex);
	W.caught_up = Max(W.caught_up, caught_up);
	if (remote_end != InvalidXLogRecPtr)
	{
		LsnMapping *last = W.lsn_map ? llast(W.lsn_map) : NULL;

		if ((last == NULL || last->remote_end < remote_end) && remote_end > W.flushed)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_cxt);
			LsnMapping *m = palloc(sizeof(LsnMapping));

			m->remote_end = remote_end;
			m->local_end = local_end;
			W.lsn_map = lappend(W.lsn_map, m);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	if (pg_atomic_exchange_u32(&L->ctl->sync_pending, 0) != 0)
		W.sync_report = true;
}

/* Every unit handed over is done, and none is being read. */
bool
concord_leader_idle(void)
{
	return L == NULL ||
		(!L->unit_open && pg_atomic_read_u64(&L->ctl->done) >= L->seq);
}

/* A worker done with its last unit: every unit up to it is done. */
static int
free_worker(void)
{
	for (;;)
	{
		uint64		done = pg_atomic_read_u64(&L->ctl->done);

		for (int i = 0; i < L->nworkers; i++)
			if (L->assigned[i] <= done)
				return i;
		/* A worker done after this sees it and sets the latch. */
		pg_atomic_write_u32(&L->ctl->leader_waiting, 1);
		pg_memory_barrier();
		if (pg_atomic_read_u64(&L->ctl->done) == done)
			leader_wait();
		pg_atomic_write_u32(&L->ctl->leader_waiting, 0);
	}
}

/* Sends one message to worker i, answering the provider while it waits. */
static void
send_to(int i, shm_mq_iovec *iov, int iovcnt)
{
	for (;;)
	{
		shm_mq_result res = shm_mq_sendv(L->mqh[i], iov, iovcnt, true, true);

		if (res == SHM_MQ_SUCCESS)
			return;
		if (res == SHM_MQ_DETACHED)
		{
			concord_leader_check();
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("apply worker %d of subscription \"%s\" is gone",
							i + 1, W.sub->name)));
		}
		leader_wait();
	}
}

/*
 * Hands the open unit's messages to its worker: the first chunk with the
 * RELATION messages the worker has not had yet and the unit's
 * dependency, later chunks as they are.
 */
static void
hand_over(bool last)
{
	ConcordUnitHeader hdr;
	StringInfoData rels;
	shm_mq_iovec iov[3];
	int			i;

	hdr.seq = L->seq;
	hdr.flags = (last ? 0 : CONCORD_UNIT_MORE) |
		(L->unit_streaming ? CONCORD_UNIT_CONT : 0);
	initStringInfo(&rels);
	if (!L->unit_streaming)
	{
		ListCell   *lc;

		bool		serial;

		/* A unit handed over before it is whole waits for all before it. */
		if (!last)
			concord_deps_serial();
		hdr.dep = concord_deps_end(&serial);
		if (serial)
			hdr.flags |= CONCORD_UNIT_SERIAL;
		i = L->unit_worker = free_worker();
		foreach(lc, L->relations)
		{
			RelMessage *rm = lfirst(lc);

			/* Those received inside the unit are in it, in their place. */
			if (rm->generation > L->rel_sent[i] &&
				rm->generation <= L->unit_rel_generation)
				appendBinaryStringInfo(&rels, rm->data, rm->len);
		}
		L->rel_sent[i] = L->rel_generation;
		L->assigned[i] = L->seq;
		prune_relations();
	}
	else
	{
		hdr.dep = L->seq - 1;
		hdr.flags |= CONCORD_UNIT_SERIAL;
		i = L->unit_worker;
	}
	iov[0].data = (const char *) &hdr;
	iov[0].len = sizeof(hdr);
	iov[1].data = rels.data;
	iov[1].len = rels.len;
	iov[2].data = L->unit.data;
	iov[2].len = L->unit.len;
	send_to(i, iov, 3);
	pfree(rels.data);
	resetStringInfo(&L->unit);
	L->unit_streaming = !last;
}

/* ---------------------------------------------------------------------
 * The stream
 * ---------------------------------------------------------------------
 */

static void
open_unit(void)
{
	if (L->unit_open)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("BEGIN inside a remote transaction")));
	L->seq++;
	L->unit_open = true;
	L->unit_streaming = false;
	L->unit_rel_generation = L->rel_generation;
	resetStringInfo(&L->unit);
	concord_deps_begin(L->seq);
}

static void
close_unit(void)
{
	hand_over(true);
	L->unit_open = false;
}

/*
 * Keeps a RELATION message for the workers that have not had it.  One
 * received inside a unit does not replace the relation's previous
 * message at once: a worker that gets the unit may need that one first
 * (prune_relations()).
 */
static void
keep_relation(Oid remoteid, const char *data, int len)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ListCell   *lc;
	RelMessage *rm = NULL;

	if (!L->unit_open)
		foreach(lc, L->relations)
			if (((RelMessage *) lfirst(lc))->remoteid == remoteid)
				rm = lfirst(lc);
	if (rm == NULL)
	{
		rm = palloc0(sizeof(RelMessage));
		rm->remoteid = remoteid;
		L->relations = lappend(L->relations, rm);
	}
	else
		pfree(rm->data);
	rm->data = palloc(len);
	memcpy(rm->data, data, len);
	rm->len = len;
	rm->generation = ++L->rel_generation;
	MemoryContextSwitchTo(oldcxt);
}

/* Drops the messages a later one of the same relation replaces. */
static void
prune_relations(void)
{
	ListCell   *lc;

	foreach(lc, L->relations)
	{
		RelMessage *rm = lfirst(lc);
		ListCell   *later;
		bool		replaced = false;

		for_each_cell(later, L->relations, lnext(L->relations, lc))
			if (((RelMessage *) lfirst(later))->remoteid == rm->remoteid)
				replaced = true;
		if (replaced)
		{
			L->relations = foreach_delete_current(L->relations, lc);
			pfree(rm->data);
			pfree(rm);
		}
	}
}

static void
leader_begin(StringInfo s)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_cxt);

	if (W.begin.origin_name)
		pfree(W.begin.origin_name);
	concord_read_begin(s, &W.begin);
	MemoryContextSwitchTo(oldcxt);
	W.provider_lsn = Max(W.provider_lsn, W.begin.end_lsn);
	open_unit();
	W.in_remote_txn = true;
	/* The origin exists before its workers use it (and is allowed). */
	if (strcmp(W.begin.origin_name, W.local_node) != 0 &&
		strcmp(W.begin.origin_name, L->prepared_origin) != 0)
	{
		MemoryContext cxt = CurrentMemoryContext;

		concord_apply_prepare_origin(W.begin.origin_name);
		MemoryContextSwitchTo(cxt);
		strlcpy(L->prepared_origin, W.begin.origin_name, NAMEDATALEN);
	}
	concord_deps_poll_invalidations();
}

static void
leader_commit(StringInfo s)
{
	ConcordCommitMsg msg;

	concord_apply_read_commit(s, &msg);
	W.in_remote_txn = false;
	W.received = Max(W.received, msg.end_lsn);
	W.sync_listed = (msg.flags & CONCORD_COMMIT_SYNC) != 0;
}

static void
leader_change(StringInfo s, char type)
{
	ConcordTuple oldtup;
	ConcordTuple newtup;
	char		oldkind;
	Oid			relid;

	if (!W.in_remote_txn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("change outside a remote transaction")));
	relid = concord_read_change(s, type, &oldkind, &oldtup, &newtup);
	/* A transaction of this node's own is skipped by its worker. */
	if (strcmp(W.begin.origin_name, W.local_node) != 0)
		concord_deps_change(relid, type, oldkind,
							type == CONCORD_MSG_INSERT ? NULL : &oldtup,
							type == CONCORD_MSG_DELETE ? NULL : &newtup);
}

/* One message of the stream: read, noted, and added to its unit. */
static void
leader_message(StringInfo s)
{
	int			start = s->cursor;
	char		type = pq_getmsgbyte(s);

	switch (type)
	{
		case CONCORD_MSG_BEGIN:
			leader_begin(s);
			break;
		case CONCORD_MSG_COMMIT:
			leader_commit(s);
			break;
		case CONCORD_MSG_RELATION:
			{
				ConcordRelationMsg *rel;
				StringInfoData copy = *s;

				rel = concord_read_relation(&copy);
				concord_apply_rel_store(s);
				concord_deps_forget(rel->remoteid);
				keep_relation(rel->remoteid, s->data + start, s->cursor - start);
				if (!L->unit_open)
					return;		/* handed to each worker before its next unit */
				break;
			}
		case CONCORD_MSG_INSERT:
		case CONCORD_MSG_UPDATE:
		case CONCORD_MSG_DELETE:
			leader_change(s, type);
			break;
		case CONCORD_MSG_TRUNCATE:
			{
				ConcordTruncateMsg msg;

				concord_read_truncate(s, &msg);
				concord_deps_serial();
				break;
			}
		case CONCORD_MSG_SEEN:
			{
				int			len;

				(void) concord_read_seen_payload(s, CONCORD_PROTO_VERSION >= 2, &len);
				break;
			}
		case CONCORD_MSG_MARK:
			{
				char	   *node;
				XLogRecPtr	lsn;

				if (W.in_remote_txn)
					ereport(ERROR,
							(errcode(ERRCODE_PROTOCOL_VIOLATION),
							 errmsg("MARK inside a remote transaction")));
				concord_read_mark(s, &node, &lsn);
				/* A unit of its own, after every transaction before it. */
				open_unit();
				concord_deps_serial();
				break;
			}
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unknown concord message type %d", type)));
	}
	if (!L->unit_open)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("message of type %d outside a remote transaction", type)));
	/* A chunk never grows past CHUNK_BYTES by more than one message. */
	if (L->unit.len > 0 && L->unit.len + (s->cursor - start) > CHUNK_BYTES &&
		type != CONCORD_MSG_COMMIT && type != CONCORD_MSG_MARK)
		hand_over(false);
	appendBinaryStringInfo(&L->unit, s->data + start, s->cursor - start);
	if (type == CONCORD_MSG_COMMIT || type == CONCORD_MSG_MARK)
		close_unit();
	else if (L->unit.len >= CHUNK_BYTES)
		hand_over(false);
}

/* The messages of one CopyData of the stream. */
void
concord_leader_messages(StringInfo s)
{
	do
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_message_cxt);

		leader_message(s);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(concord_apply_message_cxt);
	} while (s->cursor < s->len);
}
